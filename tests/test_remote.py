"""Unit tests of the SSH transport's pieces that need no LAN: host key policy, shard hashing and
staging, the host agent and its shuffle daemon (on loopback), fetching, the wheel for setup."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sysdeps

from mapred.cli.hosts import HostReport, build_wheel, check_exit_code, platform_args
from mapred.cluster.ssh.config import SSHTarget
from mapred.cluster.ssh.connect import HostKeyError, KnownHostsPolicy, RemoteError, fingerprint
from mapred.cluster.ssh.remote import ShuffleGroup, SSHTransport
from mapred.cluster.ssh.shards import check_unchanged, shard_digest, shard_pieces, stage_shard
from mapred.errors import ConfigError, JobError
from mapred.shards import list_inputs, plan
from mapred.worker import agent as host_agent
from mapred.worker import agentfs, fetch

# --------------------------------------------------------------------------- host keys


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import paramiko

    sysdeps.need("ssh-keygen")
    d = tmp_path_factory.mktemp("key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "k"], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(d / "k")), d / "k.pub"


class _Client:
    def __init__(self) -> None:
        import paramiko

        self.keys = paramiko.HostKeys()

    def get_host_keys(self) -> Any:
        return self.keys


def test_fingerprint_is_openssh_sha256(host_key: tuple[Any, Path]) -> None:
    key, pub = host_key
    out = subprocess.run(["ssh-keygen", "-lf", pub], capture_output=True, text=True).stdout
    assert fingerprint(key) == out.split()[1]


def test_unknown_host_key_is_refused_with_its_fingerprint(host_key: tuple[Any, Path],
                                                          tmp_path: Path) -> None:
    key, _ = host_key
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = SSHTarget("198.18.0.99", "root", known_hosts_files=(str(known),))
    for accept_new in (False,):
        with pytest.raises(HostKeyError) as e:
            KnownHostsPolicy(target, "h9", accept_new).missing_host_key(_Client(), "198.18.0.99",
                                                                        key)
        assert fingerprint(key) in str(e.value) and "h9" in str(e.value)
        assert e.value.exit_code == 2
    assert known.read_text() == ""


def test_accept_new_records_the_key_but_needs_a_known_hosts_file(host_key: tuple[Any, Path],
                                                                 tmp_path: Path) -> None:
    key, _ = host_key
    known = tmp_path / "sub" / "known_hosts"
    target = SSHTarget("198.18.0.99", "root", port=2222, known_hosts_files=(str(known),))
    client = _Client()
    KnownHostsPolicy(target, "h9", True).missing_host_key(client, "[198.18.0.99]:2222", key)
    assert known.read_text() == f"[198.18.0.99]:2222 ssh-ed25519 {key.get_base64()}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert client.keys.lookup("[198.18.0.99]:2222") is not None
    nowhere = SSHTarget("198.18.0.99", "root", known_hosts_files=())
    with pytest.raises(HostKeyError):
        KnownHostsPolicy(nowhere, "h9", True).missing_host_key(_Client(), "198.18.0.99", key)


def test_remote_error_names_host_command_code_and_stderr_tail() -> None:
    e = RemoteError("h2", "rsync of part-00001", 23, "a\nb\nc\nd\ne\nf\nreal cause\n")
    assert str(e) == "host h2: rsync of part-00001 exited 23: c | d | e | f | real cause"
    assert isinstance(e, JobError) and e.exit_code == 1 and e.status == 23


# --------------------------------------------------------------------------- shards


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "big.txt").write_bytes(b"".join(b"line %d of the big file\n" % i
                                            for i in range(20000)))
    for i in range(5):
        (root / f"small{i}.txt").write_bytes(b"small %d\n" % i * (i + 1))
    os.mkdir(root / "weird")
    with open(os.path.join(bytes(root / "weird"), b"$(touch PWNED) \xff;x"), "wb") as f:
        f.write(b"hostile name\n")
    return root


def _bytes(shard: Any) -> bytes:
    out = b""
    for p in shard.pieces:
        with open(p.file.path, "rb") as f:
            f.seek(p.start)
            out += f.read(p.size)
    return out


def test_shard_digest_staging_and_pieces(corpus: Path, tmp_path: Path) -> None:
    shards = plan(list_inputs(corpus), 64 << 10)
    assert any(len(s.pieces) > 1 for s in shards) and any(s.pieces[0].start > 0 for s in shards)
    stage = tmp_path / "stage"
    stage.mkdir()
    for shard in shards:
        data = _bytes(shard)
        digest = shard_digest(shard)
        assert digest == hashlib.sha256(data).hexdigest()
        path, temporary = stage_shard(shard, stage, digest)
        assert Path(path).read_bytes() == data
        whole = len(shard.pieces) == 1 and shard.pieces[0].size == shard.pieces[0].file.size
        assert temporary == (not whole)
        pieces = shard_pieces(shard, f"/w/cache/{digest}")
        assert [(p["start"], p["end"]) for p in pieces] == \
            [(sum(q.size for q in shard.pieces[:i]), sum(q.size for q in shard.pieces[:i + 1]))
             for i in range(len(shard.pieces))]
        assert [p["origin"] for p in pieces] == [q.start for q in shard.pieces]
        assert {p["path"] for p in pieces} == {f"/w/cache/{digest}"}
        assert b"".join(data[p["start"]:p["end"]] for p in pieces) == data
        if temporary:
            os.unlink(path)
    assert os.listdir(stage) == []


def test_a_changed_input_is_detected(corpus: Path) -> None:
    shard = plan(list_inputs(corpus), 1 << 30)[0]
    check_unchanged(shard)
    target = shard.pieces[0].file.path
    time.sleep(0.01)
    target.write_bytes(target.read_bytes() + b"more\n")
    with pytest.raises(JobError, match="changed during the run"):
        check_unchanged(shard)


# --------------------------------------------------------------------------- agent and daemon


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    sysdeps.need("rsync")  # the agent's shuffle daemon is rsync --daemon
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    out = io.StringIO()
    a = host_agent.Agent({"workdir": str(tmp_path / "work"), "token": "tok_" + "a" * 12,
                     "secret": "s3cret" * 6, "shuffle": "direct"}, out)
    info = a.start()
    yield a, info
    a.cleanup()


def test_agent_makes_a_private_scratch_and_an_authenticated_daemon(agent: Any) -> None:
    a, info = agent
    scratch = Path(info["scratch"])
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
    sdir = scratch / fetch.SHUFFLE_DIR
    for name in ("password", "secrets", "rsyncd.conf"):
        assert stat.S_IMODE((sdir / name).stat().st_mode) == 0o600
    conf = (sdir / "rsyncd.conf").read_text()
    assert "auth users = mapred" in conf and "read only = yes" in conf and "list = no" in conf
    d = info["daemon"]
    assert d["address"] == "127.0.0.1" and info["mapred"] and info["cores"] >= 1
    url = f"rsync://mapred@127.0.0.1:{d['port']}/map/"
    anonymous = subprocess.run(["rsync", "--contimeout=5", url], capture_output=True,
                               env={**os.environ, "RSYNC_PASSWORD": "wrong"}, timeout=30)
    assert anonymous.returncode != 0  # wrong password: refused


def test_localize_fetches_in_order_and_keeps_local_paths(agent: Any, tmp_path: Path) -> None:
    a, info = agent
    d = info["daemon"]
    root = Path(d["root"])
    (root / "m00001.0").mkdir()
    for i in range(3):
        (root / "m00001.0" / f"p00000-000{i}.run").write_bytes(b"run %d" % i)
    local = tmp_path / "local.run"
    local.write_bytes(b"local")
    base = f"rsync://mapred@127.0.0.1:{d['port']}/map"
    inputs = [{"url": f"{base}/m00001.0/p00000-0002.run", "host": "h2"}, str(local),
              {"url": f"{base}/m00001.0/p00000-0000.run", "host": "h2"}]
    paths = fetch.localize(inputs, tmp_path / "in", Path(info["scratch"]))
    assert [Path(p).read_bytes() for p in paths] == [b"run 2", b"local", b"run 0"]
    assert paths[1] == str(local)
    assert fetch.localize([str(local)], tmp_path / "x", Path("/nonexistent")) == [str(local)]


@pytest.mark.parametrize("url", ["rsync://m@h:1/map/../etc/passwd", "rsync://m@h:1/map/a b",
                                 "http://h/map/x", "rsync://m@h:1/map/$(touch PWNED)",
                                 "rsync://m@h:1/map//abs"])
def test_shuffle_urls_are_validated(url: str) -> None:
    with pytest.raises(fetch.FetchError):
        fetch.split_url(url)


def test_a_fetch_error_names_the_host(agent: Any, tmp_path: Path) -> None:
    a, info = agent
    d = info["daemon"]
    url = f"rsync://mapred@127.0.0.1:{d['port']}/map/m9/p00000-0000.run"
    with pytest.raises(fetch.FetchError, match="fetching 1 map output from host h3") as e:
        fetch.localize([{"url": url, "host": "h3"}], tmp_path / "in", Path(info["scratch"]))
    assert fetch.fetch_error_host(f"FetchError: {e.value}") == "h3"  # how the runner reads it
    urls = [{"url": url, "host": "h3"}, {"url": url.replace("p00000", "p00001"), "host": "h3"}]
    with pytest.raises(fetch.FetchError, match="fetching 2 map outputs from host h3") as e:
        fetch.localize(urls, tmp_path / "in2", Path(info["scratch"]))
    assert fetch.fetch_error_host(f"FetchError: {e.value}") == "h3"


def test_agent_requests_and_cleanup(agent: Any, tmp_path: Path) -> None:
    a, info = agent
    scratch = Path(info["scratch"])
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, agentfs.TOKEN_ENV: a.token},
                              start_new_session=True)
    data = b"def mapper(line):\n    yield line, 1\n"
    a.handle({"op": "put", "path": "jobs/abc/job.py", "data": base64.b64encode(data).decode()})
    assert (Path(info["workdir"]) / "jobs/abc/job.py").read_bytes() == data
    a.handle({"op": "put", "id": 1, "path": "../escape.py", "data": ""})
    assert "bad path" in json.loads(a.out.getvalue().splitlines()[-1])["error"]
    (scratch / "map" / "x").mkdir()
    a.handle({"op": "rm", "paths": [str(scratch / "map" / "x"), "/etc/passwd"]})
    assert not (scratch / "map" / "x").exists() and Path("/etc/passwd").exists()
    port = info["daemon"]["port"]
    a.cleanup()
    assert victim.wait(timeout=10) == -9
    assert not scratch.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_a_dead_agent_is_swept_at_the_next_start(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    work = tmp_path / "work"
    stale = work / "runs" / "crashed"
    stale.mkdir(parents=True)
    (stale / ".agent.lock").write_text("")
    live = work / "runs" / "running"  # another run's agent, alive: its lock is held
    live.mkdir()
    held = os.open(live / ".agent.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    (work / "runs" / "halfway").mkdir()  # a cleanup killed after the lock went: no lock
    (work / "runs" / ".starting.0a1b").mkdir()  # an agent making its run dir right now
    old = work / "runs" / ".abandoned.2c3d"
    old.mkdir()
    os.utime(old, (time.time() - agentfs.STALE_RUN_AGE - 60,) * 2)
    a = host_agent.Agent({"workdir": str(work), "token": "tok_" + "b" * 12}, io.StringIO())
    a.start()
    try:
        assert sorted(os.listdir(work / "runs")) == [".starting.0a1b", "running",
                                                     "tok_" + "b" * 12]
    finally:
        a.cleanup()
        os.close(held)
    assert sorted(os.listdir(work / "runs")) == [".starting.0a1b", "running"]


@pytest.mark.needs("rsync")
@pytest.mark.parametrize("command", [["-m", "mapred.worker.agent"], ["-m", "mapred.worker.fetch", "agent"]])
def test_agent_over_a_pipe_cleans_up_when_its_stdin_closes(tmp_path: Path,
                                                           command: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, *command],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"workdir": str(tmp_path / "w"), "token": "tok_" + "c" * 12,
                                 "secret": "x" * 32, "shuffle": "direct"}).encode() + b"\n")
    proc.stdin.flush()
    info = json.loads(proc.stdout.readline())
    assert info["ev"] == "started" and Path(info["scratch"]).is_dir()
    proc.stdin.close()  # the coordinator is gone
    assert proc.wait(timeout=15) == 0
    assert not Path(info["scratch"]).exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", info["daemon"]["port"])) != 0


# --------------------------------------------------------------------------- transport pieces


def _fake(name: str, group: ShuffleGroup, shuffle: str = "direct") -> SSHTransport:
    t = SSHTransport.__new__(SSHTransport)
    t.name, t.shuffle, t.group = name, shuffle, group
    t._info = {"daemon": {"address": f"198.18.0.{len(group.members) + 11}", "port": 4000,
                          "user": "mapred", "module": "map", "root": f"/w/runs/{name}/map"}}
    t._cached = set()
    group.join(t)
    return t


def test_reduce_inputs_point_at_the_mapper_hosts_daemons() -> None:
    g = ShuffleGroup()
    h1, h2 = _fake("h1", g), _fake("h2", g)
    got = h1.reduce_inputs([("h1", "/w/runs/h1/map/m1.0/p00000-0000.run"),
                            ("h2", "/w/runs/h2/map/m2.0/p00000-0000.run")])
    assert got == ["/w/runs/h1/map/m1.0/p00000-0000.run",
                   {"url": "rsync://mapred@198.18.0.12:4000/map/m2.0/p00000-0000.run",
                    "host": "h2"}]
    with pytest.raises(JobError, match="outside"):
        h1.reduce_inputs([("h2", "/etc/passwd")])
    with pytest.raises(JobError, match="cannot fetch"):
        h1.reduce_inputs([("h7", "/w/x")])
    h2._cached.add("d" * 64)
    assert g.holders("d" * 64, exclude=h1) == [h2] and g.holders("d" * 64, exclude=h2) == []


def test_a_local_host_is_not_an_ssh_host() -> None:
    from mapred.cluster.hosts import embedded_default

    with pytest.raises(ValueError):
        SSHTransport(embedded_default().hosts[0], run_state_dir=Path("/tmp"))


def test_bad_shuffle_mode_is_a_config_error() -> None:
    from mapred.cluster.hosts import Host

    with pytest.raises(ConfigError):
        SSHTransport(Host("h", "198.18.0.1"), run_state_dir=Path("/tmp"), shuffle="carrier")


# --------------------------------------------------------------------------- hosts setup/check


def test_wheel_of_the_running_mapred(tmp_path: Path) -> None:
    import mapred

    wheel = build_wheel(tmp_path)
    assert wheel.name == f"mapred-{mapred.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"mapred/cluster/ssh/remote.py", "mapred/worker/fetch.py", "mapred/worker/main.py",
                "mapred/kernels/table.py", "mapred/cli/__init__.py",
                "mapred/jobs/wordcount.py"} <= names
        info = f"mapred-{mapred.__version__}.dist-info"
        meta = zf.read(f"{info}/METADATA").decode()
        assert f"Version: {mapred.__version__}" in meta and "Name: mapred" in meta
        for row in zf.read(f"{info}/RECORD").decode().splitlines():
            name, digest, size = row.split(",")
            if digest:
                data = zf.read(name)
                assert int(size) == len(data)
                assert digest == "sha256=" + base64.urlsafe_b64encode(
                    hashlib.sha256(data).digest()).rstrip(b"=").decode()
        # real modification times: numba's kernel cache is keyed on them
        src = Path(mapred.__file__).parent / "cluster" / "ssh" / "remote.py"
        stamp = time.localtime(src.stat().st_mtime)[:6]
        assert abs(time.mktime((*zf.getinfo("mapred/cluster/ssh/remote.py").date_time, 0, 0, -1))
                   - time.mktime((*stamp, 0, 0, -1))) <= 2


def test_pip_platform_for_a_glibc_host() -> None:
    args = platform_args({"python": [3, 11, 2], "machine": "x86_64", "libc": ["glibc", "2.36"]})
    assert args[:7] == ["--only-binary=:all:", "--python-version", "3.11", "--implementation",
                        "cp", "--abi", "cp311"]
    assert "manylinux_2_36_x86_64" in args and "manylinux2014_x86_64" in args
    assert "manylinux_2_37_x86_64" not in args


def test_check_exit_codes() -> None:
    ok, bad = HostReport("a", "x", ok=True), HostReport("b", "y", ok=False)
    assert check_exit_code([ok, ok]) == 0
    assert check_exit_code([ok, bad]) == 1
    assert check_exit_code([bad, bad]) == 3


def test_thread_safety_of_the_digest_memo(corpus: Path) -> None:
    shards = plan(list_inputs(corpus), 16 << 10)
    results: list[list[str]] = []

    def run() -> None:
        results.append([shard_digest(s) for s in shards])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == results[0] for r in results)


def test_the_docs_state_the_agents_silence_timeout() -> None:
    seconds = f"{host_agent.PING_TIMEOUT:g} s"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    arch = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert f"goes silent for {seconds}" in readme
    assert f"goes silent {seconds}" in arch


def test_accept_new_into_dev_null_is_refused_naming_why(host_key: tuple[Any, Path]) -> None:
    key, _ = host_key
    target = SSHTarget("198.18.0.99", "root", known_hosts_files=(os.devnull,))
    with pytest.raises(HostKeyError) as e:
        KnownHostsPolicy(target, "h9", True).missing_host_key(_Client(), "198.18.0.99", key)
    assert "--accept-new-host-keys refused" in str(e.value)
    assert f"{os.devnull} is not a regular file" in str(e.value)


def _known_line(key: Any, names: str = "198.18.0.99", marker: str = "") -> str:
    return f"{marker} {names} {key.get_name()} {key.get_base64()}".strip() + "\n"


def test_marker_lines_are_honoured_not_fatal(host_key: tuple[Any, Path], tmp_path: Path) -> None:
    key, _ = host_key
    known = tmp_path / "known_hosts"
    known.write_text("# comment\n\n" + _known_line(key, "*.lan", "@cert-authority")
                     + _known_line(key, "198.18.0.98,other") + "|1|abc=|def= ssh-foo AAAA\n")
    target = SSHTarget("198.18.0.99", "root", known_hosts_files=(str(known),))
    policy = KnownHostsPolicy(target, "h9", False)
    client = _Client()
    policy.load(client)
    assert client.keys.lookup("198.18.0.98") is not None and client.keys.lookup("other")
    with pytest.raises(HostKeyError) as e:  # trusted only through a CA: refused, saying why
        policy.missing_host_key(client, "198.18.0.99", key)
    assert f"{known} line 3 trusts host certificates" in str(e.value), e.value


def test_a_revoked_key_is_refused_even_where_listed_and_with_accept_new(
        host_key: tuple[Any, Path], tmp_path: Path) -> None:
    key, _ = host_key
    known = tmp_path / "known_hosts"
    known.write_text(_known_line(key) + _known_line(key, "*", "@revoked"))
    target = SSHTarget("198.18.0.99", "root", known_hosts_files=(str(known),))
    policy = KnownHostsPolicy(target, "h9", True)
    client = _Client()
    policy.load(client)
    assert client.keys.lookup("198.18.0.99") is None  # not trusted although listed
    with pytest.raises(HostKeyError) as e:
        policy.missing_host_key(client, "198.18.0.99", key)
    assert f"REVOKED ({known} line 2)" in str(e.value)
    assert known.read_text().count("\n") == 2  # nothing recorded


@pytest.mark.parametrize("line, problem", [
    ("@bogus * ssh-ed25519 AAAA", "unknown marker '@bogus'"),
    ("198.18.0.99 ssh-ed25519", "expected 'hosts key-type base64-key'"),
    ("198.18.0.99 ssh-ed25519 not*base64", "not valid base64"),
    ("@revoked * ssh-ed25519 !!!!", "not valid base64"),
    ("198.18.0.99 ssh-ed25519 AAAAB3NzaC1yc2E=", "invalid ssh-ed25519 key"),
])
def test_a_malformed_known_hosts_line_is_exit_2_naming_file_and_line(
        tmp_path: Path, line: str, problem: str) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("# first\n" + line + "\n")
    target = SSHTarget("198.18.0.99", "root", known_hosts_files=(str(known),))
    with pytest.raises(ConfigError) as e:
        KnownHostsPolicy(target, "h9", False)
    assert str(e.value).startswith(f"{known} line 2: ") and problem in str(e.value), e.value
    assert e.value.exit_code == 2
