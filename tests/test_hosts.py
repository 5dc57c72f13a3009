"""hosts.toml parsing, ssh config resolution, and the OpenSSH/rsync argv (mapred.cluster.hosts, .sshconfig).

The argv tests use the real OpenSSH client (``ssh -G`` prints how ssh understood its options,
without connecting) and real rsync with a fake ``ssh`` program that records its argv: they check
that the command path and the rsync path reach the same hostname/port/user/keys/known_hosts.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapred.cluster import hosts as H
from mapred.cluster.hosts import (
    Cluster,
    Host,
    SSHTarget,
    embedded_default,
    load_hosts,
    parse_memory,
    resolve_ssh,
    rsync_remote,
    rsync_rsh,
    ssh_command_args,
)
from mapred.cluster.ssh import config as sshconfig
from mapred.cluster.ssh import knownhosts
from mapred.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SSH = shutil.which("ssh")
RSYNC = shutil.which("rsync")
needs_ssh = pytest.mark.needs("ssh")
needs_rsync = pytest.mark.needs("rsync", "ssh")

ONE_HOST = '[[host]]\nname = "h1"\naddress = "198.18.0.11"\n'


def write(tmp_path: Path, text: str, name: str = "hosts.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    """The message of the ConfigError that loading ``path`` raises, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    assert info.value.exit_code == 2
    return message


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $HOME, so ``~`` and the default ~/.ssh/config are under the test's control."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


# --- hosts.toml: the good cases ---------------------------------------------------------------


def test_minimal_host_gets_every_default(tmp_path: Path) -> None:
    cluster = load_hosts(write(tmp_path, ONE_HOST))
    assert cluster == Cluster(
        hosts=(Host(name="h1", address="198.18.0.11"),),
        source=tmp_path / "hosts.toml",
        shuffle="direct",
    )
    host = cluster.hosts[0]
    assert (host.user, host.port, host.identity, host.known_hosts) == (None, None, None, None)
    assert (host.python, host.workdir, host.cores, host.memory) == (
        "python3",
        "~/.cache/mapred",
        None,
        None,
    )
    assert host.local is False


def test_every_key_explicit(tmp_path: Path) -> None:
    text = """
shuffle = "relay"
[[host]]
name = "h1"
address = "198.18.0.11"
user = "alice"
port = 2222
identity = "/keys/id_ed25519"
known_hosts = "/keys/known_hosts"
python = "/opt/venv/bin/python"
workdir = "/srv/mapred"
cores = 8
memory = "2G"
"""
    cluster = load_hosts(write(tmp_path, text))
    assert cluster.shuffle == "relay"
    assert cluster.hosts[0] == Host(
        name="h1",
        address="198.18.0.11",
        user="alice",
        port=2222,
        identity=Path("/keys/id_ed25519"),
        known_hosts=Path("/keys/known_hosts"),
        python="/opt/venv/bin/python",
        workdir="/srv/mapred",
        cores=8,
        memory=2 << 30,
        local=False,
    )


def test_defaults_apply_to_every_host_and_hosts_override(tmp_path: Path) -> None:
    text = """
[defaults]
user = "root"
port = 2222
python = "/opt/py"
workdir = "/scratch"
cores = 4
memory = "1G"
identity = "keys/id"

[[host]]
name = "h1"
address = "198.18.0.11"

[[host]]
name = "h2"
address = "198.18.0.12"
user = "alice"
port = 22
cores = 8
memory = 1024
identity = "/abs/key"

[[host]]
name = "me"
address = "local"
"""
    h1, h2, me = load_hosts(write(tmp_path, text)).hosts
    assert (h1.user, h1.port, h1.python, h1.workdir, h1.cores, h1.memory) == (
        "root",
        2222,
        "/opt/py",
        "/scratch",
        4,
        1 << 30,
    )
    assert h1.identity == tmp_path / "keys" / "id"
    assert (h2.user, h2.port, h2.cores, h2.memory, h2.identity) == (
        "alice",
        22,
        8,
        1024,
        Path("/abs/key"),
    )
    assert h2.python == "/opt/py"
    # SSH-only defaults do not reach a local host; the others do.
    assert me.local and (me.user, me.port, me.identity, me.known_hosts) == (None,) * 4
    assert (me.python, me.cores) == ("/opt/py", 4)


def test_local_host_defaults_to_this_interpreter(tmp_path: Path) -> None:
    text = (
        '[[host]]\nname = "me"\naddress = "local"\n[[host]]\nname = "lh"\naddress = "localhost"\n'
    )
    me, lh = load_hosts(write(tmp_path, text)).hosts
    assert me.local and me.python == sys.executable
    # Only "local" means no SSH: "localhost" is an SSH address like any other.
    assert not lh.local and lh.python == "python3"


def test_paths_expand_home_and_resolve_against_the_file(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    text = """
[defaults]
known_hosts = "kh/known"
[[host]]
name = "a"
address = "198.18.0.11"
identity = "~/.ssh/id_a"
[[host]]
name = "b"
address = "198.18.0.12"
identity = "../keys/./id_b"
known_hosts = "~/kh"
[[host]]
name = "c"
address = "198.18.0.13"
identity = "/etc/keys/id_c"
"""
    write(conf, text)
    monkeypatch.chdir(tmp_path)  # load through a relative path: still relative to the file
    a, b, c = load_hosts(Path("conf") / "hosts.toml").hosts
    assert a.identity == home / ".ssh" / "id_a"
    assert a.known_hosts == conf / "kh" / "known"
    assert b.identity == tmp_path / "keys" / "id_b"
    assert b.known_hosts == home / "kh"
    assert c.identity == Path("/etc/keys/id_c") and c.known_hosts == conf / "kh" / "known"
    assert all(h.identity and h.identity.is_absolute() for h in (a, b, c))


def test_source_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, ONE_HOST)
    monkeypatch.chdir(tmp_path)
    assert load_hosts("hosts.toml").source == tmp_path / "hosts.toml"


def test_configs_are_frozen(tmp_path: Path) -> None:
    cluster = load_hosts(write(tmp_path, ONE_HOST))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.hosts[0].port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.shuffle = "relay"  # type: ignore[misc]
    assert isinstance(cluster.hosts, tuple)


def test_cluster_host_lookup(tmp_path: Path) -> None:
    cluster = load_hosts(write(tmp_path, ONE_HOST))
    assert cluster.host("h1").address == "198.18.0.11"
    with pytest.raises(KeyError):
        cluster.host("nope")


def test_two_local_hosts_are_allowed(tmp_path: Path) -> None:
    text = '[[host]]\nname = "a"\naddress = "local"\n[[host]]\nname = "b"\naddress = "local"\n'
    assert [h.local for h in load_hosts(write(tmp_path, text)).hosts] == [True, True]


# --- hosts.toml: every error names file, host and key ----------------------------------------

HOST = '[[host]]\nname = "h1"\naddress = "198.18.0.11"\n'
ERROR_CASES = {
    "unknown key, suggested": (
        HOST + "prot = 22\n",
        ["host 'h1'", "key 'prot'", "unknown key", "did you mean 'port'"],
    ),
    "unknown key, no suggestion": (HOST + "zzzz = 1\n", ["host 'h1'", "key 'zzzz'", "unknown key"]),
    "unknown defaults key": (
        '[defaults]\nusr = "x"\n' + HOST,
        ["[defaults]", "key 'usr'", "did you mean 'user'"],
    ),
    "unknown top-level key": (
        '[[hosts]]\nname = "h1"\naddress = "a"\n',
        ["key 'hosts'", "unknown top-level key", "did you mean 'host'"],
    ),
    "port as string": (
        HOST + 'port = "22"\n',
        ["host 'h1'", "key 'port'", "expected an integer 1..65535", "found string '22'"],
    ),
    "port as boolean": (HOST + "port = true\n", ["key 'port'", "found boolean true"]),
    "port as float": (HOST + "port = 22.0\n", ["key 'port'", "found float 22.0"]),
    "port zero": (
        HOST + "port = 0\n",
        ["key 'port'", "expected an integer 1..65535", "found integer 0"],
    ),
    "port too big": (HOST + "port = 65536\n", ["key 'port'", "found integer 65536"]),
    "cores zero": (
        HOST + "cores = 0\n",
        ["key 'cores'", "expected an integer >= 1", "found integer 0"],
    ),
    "cores as string": (HOST + 'cores = "8"\n', ["key 'cores'", "found string '8'"]),
    "name not a string": (
        '[[host]]\nname = 5\naddress = "a"\n',
        ["host #1", "key 'name'", "expected a string", "found integer 5"],
    ),
    "name with a space": (
        '[[host]]\nname = "h 1"\naddress = "a"\n',
        ["host #1", "key 'name'", "found string 'h 1'"],
    ),
    "name ..": ('[[host]]\nname = ".."\naddress = "a"\n', ["host #1", "key 'name'"]),
    "name starting with -": ('[[host]]\nname = "-x"\naddress = "a"\n', ["host #1", "key 'name'"]),
    "address as array": (
        '[[host]]\nname = "h1"\naddress = ["a"]\n',
        ["host 'h1'", "key 'address'", "found array"],
    ),
    "address as option": (
        '[[host]]\nname = "h1"\naddress = "-oProxyCommand=x"\n',
        ["host 'h1'", "key 'address'"],
    ),
    "address with space": (
        '[[host]]\nname = "h1"\naddress = "a b"\n',
        ["host 'h1'", "key 'address'"],
    ),
    "address missing": (
        '[[host]]\nname = "h1"\n',
        ["host 'h1'", "key 'address'", "missing required key"],
    ),
    "name missing": (
        HOST + '[[host]]\naddress = "198.18.0.12"\n',
        ["host #2", "key 'name'", "missing required key"],
    ),
    "duplicate name": (HOST + HOST, ["host 'h1' (#2)", "key 'name'", "duplicate name", "host #1"]),
    "empty host list": ("host = []\n", ["key 'host'", "host list is empty"]),
    "no host at all": ('[defaults]\nuser = "x"\n', ["key 'host'", "no hosts"]),
    "host is a table": (
        '[host]\nname = "h1"\naddress = "a"\n',
        ["key 'host'", "array of tables", "found table"],
    ),
    "host not a table": ("host = [1]\n", ["host #1", "expected a table", "found integer 1"]),
    "memory bad suffix": (
        HOST + 'memory = "2X"\n',
        ["host 'h1'", "key 'memory'", "expected a byte count", "found string '2X'"],
    ),
    "memory zero": (HOST + "memory = 0\n", ["key 'memory'", "found integer 0"]),
    "memory under a byte": (HOST + 'memory = "0.0001K"\n', ["key 'memory'", "at least one byte"]),
    "memory as float": (HOST + "memory = 2.5\n", ["key 'memory'", "found float 2.5"]),
    "shuffle unknown": (
        'shuffle = "fast"\n' + HOST,
        ["key 'shuffle'", "'direct' or 'relay'", "found string 'fast'"],
    ),
    "name in defaults": (
        '[defaults]\nname = "x"\n' + HOST,
        ["[defaults]", "key 'name'", "cannot be set in [defaults]"],
    ),
    "address in defaults": ('[defaults]\naddress = "x"\n' + HOST, ["[defaults]", "key 'address'"]),
    "defaults not a table": ("defaults = 1\n" + HOST, ["key 'defaults'", "expected a table"]),
    "defaults wrong type": (
        '[defaults]\nport = "x"\n' + HOST,
        ["[defaults]", "key 'port'", "found string 'x'"],
    ),
    "ssh key on local host": (
        '[[host]]\nname = "me"\naddress = "local"\nuser = "bob"\n',
        ["host 'me'", "key 'user'", "no effect on a local host"],
    ),
    "empty python": (HOST + 'python = ""\n', ["key 'python'", "non-empty"]),
    "newline in workdir": (HOST + 'workdir = "a\\nb"\n', ["key 'workdir'", "control characters"]),
    "identity not a string": (HOST + "identity = 1\n", ["key 'identity'", "expected a string"]),
    "user starting with -": (HOST + 'user = "-oops"\n', ["key 'user'"]),
    "date value": (HOST + "python = 1979-05-27\n", ["key 'python'", "found date"]),
}


@pytest.mark.parametrize(("text", "fragments"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_names_file_host_and_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    message = load_error(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_no_suggestion_when_nothing_is_close(tmp_path: Path) -> None:
    assert "did you mean" not in load_error(write(tmp_path, HOST + "zzzz = 1\n"))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[host]]\nname = "h1\naddress = "a"\n', "line 2"),
        ('[[host]]\nname = "h1"\nname = "h2"\n', "line 3"),
        ("[[host]\n", "line 1"),
    ],
)
def test_invalid_toml_gives_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    message = load_error(write(tmp_path, text))
    assert "invalid TOML" in message and where in message and "column" in message


def test_missing_file(tmp_path: Path) -> None:
    assert "hosts file not found" in load_error(tmp_path / "nope.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()  # root reads any mode, so a directory stands in
    assert "cannot read hosts file" in load_error(tmp_path / "dir.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_bytes(b'[[host]]\nname = "h\xff"\n')
    assert "not UTF-8" in load_error(path)


def _toml_string(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(["name", "address", "user", "python", "memory", "identity"]),
    value=st.text(max_size=30),
)
def test_any_string_value_loads_or_fails_on_one_line(tmp_path: Path, key: str, value: str) -> None:
    fields = {"name": '"h1"', "address": '"198.18.0.11"', key: _toml_string(value)}
    path = write(tmp_path, "[[host]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
    try:
        host = load_hosts(path).hosts[0]
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message
        assert message.startswith(f"{path}: ") and f"key '{key}'" in message
    else:
        assert not host.address.startswith("-") and not host.name.startswith("-")
        assert host.user is None or not host.user.startswith("-")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(min_size=1, max_size=20))
def test_any_unknown_key_fails_on_one_line(tmp_path: Path, key: str) -> None:
    if key in H.HOST_KEYS:
        return
    path = write(tmp_path, HOST + f"{_toml_string(key)} = 1\n")
    message = load_error(path)
    assert "host 'h1'" in message and "unknown key" in message


# --- memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("100B", 100),
        ("1K", 1 << 10),
        ("1k", 1 << 10),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        ("2GB", 2 << 30),
        ("2GiB", 2 << 30),
        (" 2 G ", 2 << 30),
        ("1.5G", 3 << 29),
        ("3T", 3 << 40),
    ],
)
def test_parse_memory(value: object, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    "value", ["2X", "", "G", "-1G", "1e3", "2 G B", "0", "0K", 0, -5, True, 1.5, None, ["1G"]]
)
def test_parse_memory_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a byte count"):
        parse_memory(value)


@given(
    n=st.integers(min_value=1, max_value=10**9),
    unit=st.sampled_from(["", "K", "M", "G", "T", "k", "m", "g", "t"]),
    tail=st.sampled_from(["", "B", "iB", "b"]),
)
def test_parse_memory_units(n: int, unit: str, tail: str) -> None:
    if not unit and tail == "iB":
        return
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit.upper()]
    assert parse_memory(f"{n}{unit}{tail}") == n * scale


def test_memory_in_hosts_file(tmp_path: Path) -> None:
    text = (
        '[defaults]\nmemory = "512M"\n' + HOST + '[[host]]\nname="h2"\naddress="a"\nmemory="3G"\n'
    )
    h1, h2 = load_hosts(write(tmp_path, text)).hosts
    assert (h1.memory, h2.memory) == (512 << 20, 3 << 30)


# --- the embedded default and the shipped example --------------------------------------------


def test_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "build-box.lan")
    cluster = embedded_default()
    assert cluster.source is None and cluster.shuffle == "direct"
    (host,) = cluster.hosts
    assert host.name == "build-box.lan" and host.address == "local" and host.local
    assert host.python == sys.executable
    assert host.cores == len(os.sched_getaffinity(0)) >= 1
    assert (host.user, host.port, host.identity, host.known_hosts) == (None,) * 4


@pytest.mark.parametrize(("raw", "name"), [("weird host!", "weird_host_"), ("", "localhost")])
def test_embedded_default_name_is_valid(
    monkeypatch: pytest.MonkeyPatch, raw: str, name: str
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: raw)
    assert embedded_default().hosts[0].name == name


def test_shipped_example_is_this_machine_only() -> None:
    cluster = load_hosts(REPO / "hosts.toml")
    assert [(h.address, h.local) for h in cluster.hosts] == [("local", True)]
    assert cluster.shuffle == "direct"


def test_shipped_example_documents_every_key() -> None:
    text = (REPO / "hosts.toml").read_text()
    for key in [*H.HOST_KEYS, "shuffle"]:
        assert f"# {key} =" in text or f"\n{key} =" in text, key
    assert "[defaults]" in text


def test_import_does_not_load_paramiko() -> None:
    code = (
        "import sys, mapred.cluster.hosts; print(sorted({'paramiko','fabric','invoke'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# --- ssh config resolution -------------------------------------------------------------------

SSH_CONFIG = """
Host web
    HostName 198.18.0.21
    User deploy
    Port 2222
    IdentityFile ~/.ssh/web_key
    UserKnownHostsFile ~/kh1 "/tmp/kh two"
    ProxyJump hopper

Host hopper
    HostName 198.18.0.1
    User jumper
    Port 2200
    IdentityFile /keys/hop

Host plain
    HostName 198.18.0.22

Host multi
    HostName 198.18.0.30
    ProxyJump alice@hopA:2201,hopB

Host hopA
    HostName 198.18.0.2
    Port 9999
Host hopB
    HostName 198.18.0.3
    ProxyJump hopper

Host v6jump
    HostName 198.18.0.31
    ProxyJump [2001:db8::1]:2222

Host loop1
    ProxyJump loop2
Host loop2
    ProxyJump loop1

Host nojump
    HostName 198.18.0.32
    ProxyJump none

Host cmd
    ProxyCommand nc %h %p
Host dash
    HostName -oProxyCommand=evil
Host badport
    Port ssh
"""


@pytest.fixture
def ssh_config(tmp_path: Path, home: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(SSH_CONFIG)
    return path


def me() -> str:
    return sshconfig.local_user()


def test_alias_resolves_every_supported_option(ssh_config: Path, home: Path) -> None:
    target = resolve_ssh(Host(name="w", address="web"), ssh_config)
    assert target == SSHTarget(
        hostname="198.18.0.21",
        user="deploy",
        port=2222,
        identity_files=(str(home / ".ssh" / "web_key"),),
        known_hosts_files=(str(home / "kh1"), "/tmp/kh two"),
        proxy_jump=SSHTarget(
            hostname="198.18.0.1",
            user="jumper",
            port=2200,
            identity_files=("/keys/hop",),
            known_hosts_files=(str(home / ".ssh" / "known_hosts"),),
        ),
    )


def test_hosts_toml_values_win_over_ssh_config(ssh_config: Path) -> None:
    host = Host(
        name="w",
        address="web",
        user="alice",
        port=22,
        identity=Path("/k/id"),
        known_hosts=Path("/k/kh"),
    )
    target = resolve_ssh(host, ssh_config)
    assert (target.hostname, target.user, target.port) == ("198.18.0.21", "alice", 22)
    assert target.identity_files == ("/k/id",) and target.known_hosts_files == ("/k/kh",)
    assert target.proxy_jump is not None and target.proxy_jump.hostname == "198.18.0.1"


def test_defaults_without_config_entry(ssh_config: Path, home: Path) -> None:
    target = resolve_ssh(Host(name="x", address="198.18.0.40"), ssh_config)
    assert target == SSHTarget(
        hostname="198.18.0.40",
        user=me(),
        port=22,
        identity_files=(),
        known_hosts_files=(str(home / ".ssh" / "known_hosts"),),
        proxy_jump=None,
    )
    plain = resolve_ssh(Host(name="p", address="plain"), ssh_config)
    assert (plain.hostname, plain.user, plain.port) == ("198.18.0.22", me(), 22)


def test_default_ssh_config_is_home_ssh_config(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host box\n    HostName 198.18.0.50\n    Port 2022\n")
    target = resolve_ssh(Host(name="b", address="box"))
    assert (target.hostname, target.port) == ("198.18.0.50", 2022)


def test_no_ssh_config_at_all(home: Path) -> None:
    target = resolve_ssh(Host(name="b", address="box"))
    assert (target.hostname, target.user, target.port) == ("box", me(), 22)


def test_proxyjump_chain(ssh_config: Path, home: Path) -> None:
    target = resolve_ssh(Host(name="m", address="multi"), ssh_config)
    hop_b = target.proxy_jump
    assert hop_b is not None and (hop_b.hostname, hop_b.port) == ("198.18.0.3", 22)
    hop_a = hop_b.proxy_jump  # the earlier hop of the list, not hopB's own ProxyJump
    assert hop_a is not None
    assert (hop_a.hostname, hop_a.user, hop_a.port) == ("198.18.0.2", "alice", 2201)
    assert hop_a.proxy_jump is None
    # hopB alone would go through its own ProxyJump.
    alone = resolve_ssh(Host(name="b", address="hopB"), ssh_config).proxy_jump
    assert alone is not None and alone.hostname == "198.18.0.1"


def test_proxyjump_ipv6_and_none(ssh_config: Path) -> None:
    jump = resolve_ssh(Host(name="v", address="v6jump"), ssh_config).proxy_jump
    assert jump is not None and (jump.hostname, jump.port) == ("2001:db8::1", 2222)
    assert resolve_ssh(Host(name="n", address="nojump"), ssh_config).proxy_jump is None


@pytest.mark.parametrize(
    ("alias", "fragment"),
    [
        ("loop1", "more than 8 hops"),
        ("cmd", "key 'ProxyCommand'"),
        ("dash", "key 'HostName'"),
        ("badport", "key 'Port'"),
    ],
)
def test_ssh_config_errors(ssh_config: Path, alias: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_ssh(Host(name="bad", address=alias), ssh_config)
    message = str(info.value)
    assert "\n" not in message and fragment in message
    assert message.startswith(f"{ssh_config}: host 'bad': ")


def test_explicit_ssh_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ssh config file not found"):
        resolve_ssh(Host(name="a", address="a"), tmp_path / "missing")


def test_local_host_has_no_ssh_target() -> None:
    with pytest.raises(ValueError, match="local"):
        resolve_ssh(embedded_default().hosts[0])


def test_resolve_from_hosts_file(tmp_path: Path, ssh_config: Path) -> None:
    text = '[defaults]\nuser = "ops"\n[[host]]\nname = "w"\naddress = "web"\n'
    host = load_hosts(write(tmp_path, text)).hosts[0]
    target = resolve_ssh(host, ssh_config)
    assert (target.hostname, target.user, target.port) == ("198.18.0.21", "ops", 2222)


# --- OpenSSH argv ----------------------------------------------------------------------------


def option_values(args: list[str]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "-o":
            key, _, val = value.partition("=")
            values.setdefault(key, []).append(val)
        elif flag.startswith("-") and flag != "-o" and not value.startswith("-"):
            values.setdefault(flag, []).append(value)
    return values


def test_argv_security_options() -> None:
    target = SSHTarget(hostname="198.18.0.11", user="u", port=2222, known_hosts_files=("/kh",))
    args = ssh_command_args(target)
    opts = option_values(args)
    assert opts["BatchMode"] == ["yes"] and opts["StrictHostKeyChecking"] == ["yes"]
    assert opts["ForwardAgent"] == ["no"] and opts["UserKnownHostsFile"] == ["/kh"]
    assert opts["ServerAliveInterval"] == ["5"] and opts["ServerAliveCountMax"] == ["3"]
    assert opts["ConnectTimeout"] == ["10"]
    assert opts["-p"] == ["2222"] and opts["-l"] == ["u"] and opts["-F"] == [os.devnull]
    assert "IdentitiesOnly" not in opts and "IdentityFile" not in opts and "-i" not in args
    assert "ProxyCommand" not in opts
    assert not any("=no" in a and "StrictHostKeyChecking" in a for a in args)
    new = option_values(ssh_command_args(target, accept_new_host_keys=True))
    assert new["StrictHostKeyChecking"] == ["accept-new"]


def test_accept_new_needs_a_known_hosts_file() -> None:
    target = SSHTarget(hostname="h", user="u", known_hosts_files=())
    opts = option_values(ssh_command_args(target, accept_new_host_keys=True))
    assert opts["StrictHostKeyChecking"] == ["yes"]
    assert opts["UserKnownHostsFile"] == [os.devnull]


def test_identity_means_identities_only() -> None:
    target = SSHTarget(hostname="h", user="u", identity_files=("/k/a", "/k/b"))
    args = ssh_command_args(target)
    assert option_values(args)["IdentitiesOnly"] == ["yes"]
    assert option_values(args)["IdentityFile"] == ["/k/a", "/k/b"]


def test_rsync_rsh_splits_back_to_the_argv(ssh_config: Path) -> None:
    target = resolve_ssh(Host(name="w", address="web"), ssh_config)
    rsh = rsync_rsh(target)
    assert shlex.split(rsh) == ["ssh", *ssh_command_args(target)]
    assert rsync_rsh(target, ssh="/usr/bin/ssh").startswith("/usr/bin/ssh ")


def test_rsync_remote() -> None:
    assert rsync_remote(SSHTarget("198.18.0.1", "u"), "/x y") == "198.18.0.1:/x y"
    assert rsync_remote(SSHTarget("2001:db8::1", "u"), "/x") == "[2001:db8::1]:/x"


def tricky_target(tmp_path: Path) -> SSHTarget:
    """A target whose paths need every kind of quoting: spaces, quotes, '%', '$(...)'."""
    keys = tmp_path / "it's a $(touch PWNED) dir"
    keys.mkdir()
    for name in ("id key", "id%dkey", "hop key"):
        (keys / name).write_text("not a key\n")
    hop = SSHTarget(
        hostname="198.18.0.1",
        user="jumper",
        port=2200,
        identity_files=(str(keys / "hop key"), str(keys / "id%dkey")),
        known_hosts_files=(str(keys / 'kh "hop"'),),
    )
    return SSHTarget(
        hostname="198.18.0.21",
        user="deploy",
        port=2222,
        identity_files=(str(keys / "id key"), str(keys / "id%dkey")),
        known_hosts_files=(str(keys / "kh 1"), str(tmp_path / "kh2%h")),
        proxy_jump=hop,
    )


def ssh_dash_g(args: list[str], hostname: str, env: dict[str, str]) -> dict[str, list[str]]:
    """How OpenSSH understood ``args`` (``ssh -G`` does not connect)."""
    assert SSH is not None
    out = subprocess.run(
        [SSH, "-G", *args, hostname],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=30,
    ).stdout
    parsed: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        parsed.setdefault(key, []).append(value)
    return parsed


@needs_ssh
@pytest.mark.parametrize("alias", ["web", "plain", "multi"])
def test_openssh_reads_the_same_target_from_the_argv(
    ssh_config: Path, home: Path, alias: str
) -> None:
    target = resolve_ssh(Host(name="x", address=alias), ssh_config)
    _check_dash_g(target, {**os.environ, "HOME": str(home)})


@needs_ssh
def test_openssh_reads_the_same_tricky_target(tmp_path: Path, home: Path) -> None:
    _check_dash_g(tricky_target(tmp_path), {**os.environ, "HOME": str(home)})


def _check_dash_g(target: SSHTarget, env: dict[str, str]) -> None:
    seen = ssh_dash_g(ssh_command_args(target), target.hostname, env)
    assert seen["hostname"] == [target.hostname]
    assert seen["user"] == [target.user]
    assert seen["port"] == [str(target.port)]
    assert seen["userknownhostsfile"] == [" ".join(target.known_hosts_files)]
    assert seen["globalknownhostsfile"] == [os.devnull]
    assert seen["batchmode"] == ["yes"] and seen["stricthostkeychecking"] == ["true"]
    assert seen["forwardagent"] == ["no"]
    if target.identity_files:
        # ssh -G shows IdentityFile before its %-expansion (and unquoted).
        shown = [f.replace("%%", "%") for f in seen["identityfile"]]
        assert sorted(shown) == sorted(target.identity_files)
        assert seen["identitiesonly"] == ["yes"]
    assert ("proxycommand" in seen) == (target.proxy_jump is not None)


def fake_ssh(tmp_path: Path) -> tuple[Path, Path]:
    """A program called ``ssh`` that records its argv (NUL-separated) and fails."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    record = tmp_path / "argv.bin"
    script = bindir / "ssh"
    script.write_text(
        f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{record}'\nexit 255\n"
    )
    script.chmod(0o755)
    return script, record


def recorded(record: Path) -> list[str]:
    return record.read_bytes().decode().split("\0")[:-1]


@needs_rsync
def test_rsync_runs_ssh_with_exactly_the_argv(tmp_path: Path, home: Path) -> None:
    target = tricky_target(tmp_path)
    script, record = fake_ssh(tmp_path)
    source = tmp_path / "src.txt"
    source.write_text("x\n")
    assert RSYNC is not None
    subprocess.run(
        [
            RSYNC,
            "-e",
            rsync_rsh(target, ssh=str(script)),
            "--",
            str(source),
            rsync_remote(target, "/d"),
        ],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    args = ssh_command_args(target)
    assert recorded(record)[: len(args) + 1] == [*args, target.hostname]
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


@needs_ssh
@pytest.mark.parametrize("alias", ["web", "multi"])
def test_proxycommand_runs_the_jump_with_its_full_argv(
    tmp_path: Path, ssh_config: Path, home: Path, alias: str
) -> None:
    """Real ssh expands and runs the ProxyCommand: the jump ssh gets the jump target's argv."""
    target = resolve_ssh(Host(name="x", address=alias), ssh_config)
    _check_proxy_command(tmp_path, target, home)


@needs_ssh
def test_proxycommand_quoting_with_tricky_paths(tmp_path: Path, home: Path) -> None:
    _check_proxy_command(tmp_path, tricky_target(tmp_path), home)


def _check_proxy_command(tmp_path: Path, target: SSHTarget, home: Path) -> None:
    assert SSH is not None and target.proxy_jump is not None
    _, record = fake_ssh(tmp_path)
    env = {
        **os.environ,
        "HOME": str(home),
        "SHELL": "/bin/sh",
        "PATH": f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run(
        [SSH, *ssh_command_args(target), target.hostname, "true"],
        capture_output=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    jump = target.proxy_jump
    expected = [*ssh_command_args(jump), "-W", f"[{target.hostname}]:{target.port}", jump.hostname]
    assert recorded(record) == expected
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", ["devnull", "fifo", "directory", "no-parent"])
def test_accept_new_is_refused_when_known_hosts_cannot_keep_a_key(tmp_path: Path,
                                                                   kind: str) -> None:
    path = {"devnull": Path(os.devnull), "fifo": tmp_path / "fifo", "directory": tmp_path,
            "no-parent": tmp_path / "file" / "known_hosts"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "no-parent":
        (tmp_path / "file").write_text("")
    target = SSHTarget(hostname="h", user="u", known_hosts_files=(str(path),))
    assert knownhosts.accept_new_refusal(target.known_hosts_files) is not None
    opts = option_values(ssh_command_args(target, accept_new_host_keys=True))
    assert opts["StrictHostKeyChecking"] == ["yes"]


def test_accept_new_is_allowed_into_a_regular_or_creatable_file(tmp_path: Path) -> None:
    for path in (tmp_path / "known_hosts", tmp_path / "new" / "dir" / "known_hosts"):
        target = SSHTarget(hostname="h", user="u", known_hosts_files=(str(path),))
        assert knownhosts.accept_new_refusal(target.known_hosts_files) is None
        opts = option_values(ssh_command_args(target, accept_new_host_keys=True))
        assert opts["StrictHostKeyChecking"] == ["accept-new"]


# --- connect_timeout -------------------------------------------------------------------------


def test_connect_timeout_in_defaults_and_per_host(tmp_path: Path) -> None:
    text = ("[defaults]\nconnect_timeout = 4\n" + ONE_HOST
            + '[[host]]\nname = "h2"\naddress = "198.18.0.12"\nconnect_timeout = 2.5\n'
            + '[[host]]\nname = "h3"\naddress = "198.18.0.13"\n')
    path = write(tmp_path, text)
    assert [h.connect_timeout for h in load_hosts(path).hosts] == [4.0, 2.5, 4.0]
    assert load_hosts(write(tmp_path, ONE_HOST, "plain.toml")).hosts[0].connect_timeout is None


@pytest.mark.parametrize("value", ["0", "-1", "601", '"10"', "true", "[1]"])
def test_connect_timeout_must_be_a_positive_number_of_seconds(tmp_path: Path,
                                                              value: str) -> None:
    message = load_error(write(tmp_path, ONE_HOST + f"connect_timeout = {value}\n"))
    assert "key 'connect_timeout'" in message and "number of seconds" in message, message


def test_connect_timeout_has_no_effect_on_a_local_host(tmp_path: Path) -> None:
    text = '[[host]]\nname = "me"\naddress = "local"\nconnect_timeout = 3\n'
    assert "has no effect on a local host" in load_error(write(tmp_path, text))


def test_connect_timeout_reaches_both_ssh_paths(ssh_config: Path) -> None:
    config = ssh_config.read_text().replace("Host plain\n", "Host plain\n    ConnectTimeout 7\n")
    ssh_config.write_text(config)
    assert resolve_ssh(Host(name="p", address="plain"), ssh_config).connect_timeout == 7
    explicit = Host(name="p", address="plain", connect_timeout=2.5)  # hosts.toml wins
    target = resolve_ssh(explicit, ssh_config)
    assert target.connect_timeout == 2.5
    assert option_values(ssh_command_args(target))["ConnectTimeout"] == ["3"]  # whole seconds
    assert resolve_ssh(Host(name="x", address="198.18.0.40"), ssh_config).connect_timeout == 10
    hop = resolve_ssh(Host(name="w", address="web", connect_timeout=3), ssh_config).proxy_jump
    assert hop is not None and hop.connect_timeout == 3  # every hop of the way
