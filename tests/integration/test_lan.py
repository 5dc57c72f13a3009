"""The test LAN is real: real sshd, verified host keys, private filesystems, real failures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from lanlib import REGISTRY, WORKDIR, Lan, LanUnsupported, cleanup_stale

pytestmark = pytest.mark.integration

LANLIB = Path(__file__).resolve().parents[1] / "lanlib.py"
HOSTILE = b"-rf 'q' \"dq\" $(touch PWNED) `touch PWNED` ;touch PWNED; \xff\xfe\x80 .bin"


def _ssh(
    lan: Lan, host: str, cmd: str = "true", *opts: str, timeout: float = 20
) -> tuple[int, str, float]:
    t0 = time.monotonic()
    cp = lan.ssh(host, cmd, *opts, timeout=timeout)
    return cp.returncode, cp.stdout + cp.stderr, time.monotonic() - t0


def _rsync(lan: Lan, *args: bytes | str, timeout: float = 30) -> subprocess.CompletedProcess:
    argv = ["rsync", "-s", "-a", "-e", lan.rsync_rsh, "--", *args]
    return subprocess.run(argv, capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def scratch(lan_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """A 2-host LAN the failure tests may break; healed after each test that uses it."""
    net = Lan.up(2, tmp_path_factory.mktemp("scratch"))
    try:
        yield net
    finally:
        net.down()


@pytest.fixture
def victim(scratch: Lan) -> Iterator:
    host = scratch["h1"]
    try:
        yield host
    finally:
        host.heal()


# --------------------------------------------------------------------------- ssh and host keys


def test_ssh_to_every_host_with_verified_key(lan: Lan) -> None:
    for h in lan.hosts:
        rc, out, _ = _ssh(lan, h.name, "hostname; echo $HOME")
        assert rc == 0, out
        assert out.split() == [h.name, "/root"]
        assert lan.ssh(h.address, "true").returncode == 0  # by address too (Host * block)


def test_unknown_host_key_is_refused(lan: Lan, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    rc, out, _ = _ssh(lan, "h1", "true", "-o", f"UserKnownHostsFile={empty}")
    assert rc == 255 and "Host key verification failed" in out, out


def test_changed_host_key_is_refused(lan: Lan, tmp_path: Path) -> None:
    h1, h2 = lan["h1"], lan["h2"]
    wrong = tmp_path / "known_hosts"
    h2_key = next(
        ln for ln in lan.known_hosts.read_text().splitlines() if ln.startswith(h2.address + " ")
    )
    wrong.write_text(h1.address + h2_key[len(h2.address) :] + "\n")  # h2's key claimed for h1
    rc, out, _ = _ssh(lan, "h1", "true", "-o", f"UserKnownHostsFile={wrong}")
    assert rc == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in out, out


def test_host_python_is_the_shared_venv(lan: Lan) -> None:
    rc, out, _ = _ssh(lan, "h2", f"{lan.python} -c 'import sys; print(sys.prefix)'")
    assert rc == 0, out
    assert out.strip() == str(Path(lan.python).parent.parent)


def test_hosts_toml(lan: Lan, lan_hosts_toml: Path, tmp_path: Path) -> None:
    doc = tomllib.loads(lan_hosts_toml.read_text())
    assert doc["defaults"] == {
        "user": "root",
        "identity": str(lan.identity),
        "known_hosts": str(lan.known_hosts),
        "python": lan.python,
        "workdir": WORKDIR,
    }
    assert [(h["name"], h["address"]) for h in doc["host"]] == [
        (h.name, h.address) for h in lan.hosts
    ]
    custom = tomllib.loads(
        lan.write_hosts_toml(tmp_path / "h.toml", workdir="/srv/x", timeout=5).read_text()
    )
    assert custom["defaults"]["workdir"] == "/srv/x" and custom["defaults"]["timeout"] == 5


# --------------------------------------------------------------------------- rsync, hostile names


def _find_pwned(lan: Lan, tmp_path: Path) -> list[str]:
    found = []
    for h in lan.hosts:  # on a host only these are writable: the root fs is read-only
        cp = h.run(f"find /root /tmp /var/tmp /run /dev/shm {WORKDIR} -name 'PWNED*'")
        found += [f"{h.name}:{p}" for p in cp.stdout.split()]
    for d in (Path.cwd(), tmp_path, Path.home(), Path("/tmp")):
        found += [str(p) for p in d.glob("PWNED*")]
    return found + [str(p) for p in tmp_path.rglob("PWNED*")]


def test_rsync_hostile_name_roundtrip(lan: Lan, tmp_path: Path) -> None:
    h1 = lan["h1"]
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(200_000)
    path = os.path.join(bytes(src), HOSTILE)
    with open(path, "wb") as fh:
        fh.write(data)
    h1.run(["mkdir", "-p", f"{WORKDIR}/in"], check=True)

    up = _rsync(lan, path, f"h1:{WORKDIR}/in/")
    assert up.returncode == 0, up.stderr

    listing = h1.run(
        [
            "/usr/bin/python3",
            "-c",
            f"import os,sys; sys.stdout.write(os.listdir(b'{WORKDIR}/in')[0].hex())",
        ],
        check=True,
    )
    assert bytes.fromhex(listing.stdout) == HOSTILE
    digest = h1.run(
        ["sha256sum", "--", f"{WORKDIR}/in/".encode() + HOSTILE], text=False, check=True
    )
    assert digest.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

    back = tmp_path / "back"
    back.mkdir()
    down = _rsync(lan, f"h1:{WORKDIR}/in/".encode() + HOSTILE, bytes(back) + b"/")
    assert down.returncode == 0, down.stderr
    assert os.listdir(bytes(back)) == [HOSTILE]
    assert Path(os.fsdecode(os.path.join(bytes(back), HOSTILE))).read_bytes() == data
    assert _find_pwned(lan, tmp_path) == []


# --------------------------------------------------------------------------- isolation


def test_host_cannot_read_client_key_or_repo(lan: Lan) -> None:
    for h in lan.hosts:
        for path in (lan.identity, lan.client_dir, lan.base_dir, Path(__file__)):
            assert h.run(["test", "-e", str(path)]).returncode != 0, f"{h.name} sees {path}"
        assert h.run("ls -A /root/.ssh").stdout.split() == ["authorized_keys"]
        rc, out, _ = _ssh(lan, h.name, f"cat {lan.identity}")
        assert rc != 0 and "PRIVATE KEY" not in out


def test_host_cannot_ssh_to_another_host(lan: Lan) -> None:
    h1, h2 = lan["h1"], lan["h2"]
    h1.run("cat > /tmp/kh", input=lan.known_hosts.read_text(), check=True)
    cp = h1.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UserKnownHostsFile=/tmp/kh",
            "-o",
            "ConnectTimeout=5",
            f"root@{h2.address}",
            "true",
        ],
        timeout=20,
    )
    # the network path is fine (host key checked), only authentication fails: no key on h1
    assert cp.returncode == 255 and "Permission denied (publickey)" in cp.stderr, cp.stderr


def test_private_tmp_and_read_only_root(lan: Lan) -> None:
    h1, h2 = lan["h1"], lan["h2"]
    name = f"/tmp/mrl-probe-{uuid.uuid4().hex}"
    h1.run(f"echo secret > {name}; echo shm > /dev/shm/{Path(name).name}", check=True)
    try:
        assert _ssh(lan, "h1", f"cat {name}")[1].strip() == "secret"  # ssh sessions see it too
        assert h2.run(["test", "-e", name]).returncode != 0
        assert _ssh(lan, "h2", f"test -e {name}")[0] != 0
        assert not Path(name).exists() and not Path("/dev/shm", Path(name).name).exists()
        ro = h1.run("touch /usr/local/mrl-probe")
        assert ro.returncode != 0 and "Read-only file system" in ro.stderr
        assert h1.run(f"test -d {WORKDIR} && test -w {WORKDIR}").returncode == 0
    finally:
        h1.run(f"rm -f {name} /dev/shm/{Path(name).name}")


def test_hosts_route_only_their_subnet(lan: Lan) -> None:
    routes = lan["h3"].run("ip -4 route show", check=True).stdout.strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith(str(lan.subnet)), routes


def test_pids_excludes_listener(lan: Lan) -> None:
    h = lan["h3"]
    assert h.alive() and h.sshd_pid not in h.pids()
    sess = subprocess.Popen(
        lan.ssh_argv("h3", "sleep 20"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not any("sleep" in _comm(p) for p in h.pids()):
            assert time.monotonic() < deadline, "the session never showed up in pids()"
            time.sleep(0.05)
    finally:
        sess.kill()
        sess.wait()


def _running(pid: int) -> bool:
    """True unless pid is gone or a zombie (dead, waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- injected failures


def test_kill_cuts_sessions_and_refuses_new_ones(scratch: Lan, victim) -> None:
    sess = subprocess.Popen(
        scratch.ssh_argv(victim.name, "sleep 60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    victim.kill()
    assert sess.wait(timeout=10) == 255
    assert not victim.alive() and victim.pids() == []
    rc, out, took = _ssh(scratch, victim.name, "true", "-o", "ConnectTimeout=3")
    assert rc == 255 and took < 5, out
    victim.restart()
    assert _ssh(scratch, victim.name)[0] == 0


def test_freeze_hangs_and_thaw_resumes(scratch: Lan, victim) -> None:
    victim.freeze()
    rc, out, took = _ssh(scratch, victim.name, "true", "-o", "ConnectTimeout=2")
    assert rc == 255 and took >= 1.5, out  # a hang, not a refusal
    victim.thaw()
    assert _ssh(scratch, victim.name)[0] == 0


def test_link_down_drops_silently_and_link_up_restores(scratch: Lan, victim) -> None:
    victim.link_down()
    rc, out, took = _ssh(scratch, victim.name, "true", "-o", "ConnectTimeout=3")
    assert rc == 255 and 2.5 <= took < 10, (took, out)  # timed out: no reset came back
    victim.link_up()
    rc, out, _ = _ssh(scratch, victim.name)
    assert rc == 0, out


def _time_upload(lan: Lan, host: str, nbytes: int) -> float:
    t0 = time.monotonic()
    cp = lan.ssh(host, "cat > /dev/null", input=os.urandom(nbytes), text=False, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return time.monotonic() - t0


def test_rate_limit_slows_transfers(scratch: Lan, victim) -> None:
    size = 768 * 1024
    fast = _time_upload(scratch, victim.name, size)
    victim.netem(rate="3mbit")  # 768 KiB at 3 Mbit/s is about 2.1 s
    slow = _time_upload(scratch, victim.name, size)
    assert slow > 1.5 and slow > 3 * fast, (fast, slow)
    victim.netem_clear()
    assert _time_upload(scratch, victim.name, size) < slow / 2


def test_delay_is_added_or_reported_unsupported(scratch: Lan, victim) -> None:
    base = _time_ssh_rtt(scratch, victim.name)
    try:
        victim.netem(delay_ms=150)
    except LanUnsupported as e:  # this kernel has no sch_netem: say so, change nothing
        assert "sch_netem" in str(e)
        assert _time_ssh_rtt(scratch, victim.name) < base + 0.5
        return
    assert _time_ssh_rtt(scratch, victim.name) > base + 0.5  # several round trips, 300 ms each


def _time_ssh_rtt(lan: Lan, host: str) -> float:
    rc, out, took = _ssh(lan, host)
    assert rc == 0, out
    return took


def test_small_disk_fills_for_real(scratch: Lan, victim) -> None:
    victim.run(f"echo kept > {WORKDIR}/marker", check=True)
    victim.small_disk(4)
    cp = victim.run(
        [
            "/usr/bin/python3",
            "-c",
            f"import errno\ntry:\n open('{WORKDIR}/big','wb').write(b'0'*(16<<20))\n"
            "except OSError as e:\n print(errno.errorcode[e.errno])",
        ]
    )
    assert cp.stdout.strip() == "ENOSPC", (cp.stdout, cp.stderr)
    rc, out, _ = _ssh(scratch, victim.name, f"head -c 8M /dev/zero > {WORKDIR}/big2")
    assert rc != 0 and "No space left on device" in out
    victim.small_disk_clear()
    assert victim.run(f"cat {WORKDIR}/marker").stdout.strip() == "kept"


# --------------------------------------------------------------------------- lifecycle


def _leftovers(prefix: str) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    return [ln.split()[0] for ln in netns.splitlines() if ln.startswith(prefix)] + [
        link["ifname"] for link in links if link["ifname"].startswith(prefix)
    ]


def test_down_leaves_nothing(make_lan: Callable[[int], Lan], lan: Lan) -> None:
    extra = make_lan(2)
    assert extra.subnet != lan.subnet and extra.prefix != lan.prefix
    rc, out, _ = _ssh(extra, "h1", "true", "-o", f"UserKnownHostsFile={lan.known_hosts}")
    assert rc == 255, out  # different LAN, different host keys
    sess = subprocess.Popen(
        extra.ssh_argv("h2", "sleep 60"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.5)
    pids = [h.sshd_pid for h in extra.hosts] + [p for h in extra.hosts for p in h.pids()]
    assert len(pids) > 2 and _leftovers(extra.prefix)
    extra.down()
    sess.wait(timeout=10)
    extra.down()  # idempotent
    assert _leftovers(extra.prefix) == []
    assert [p for p in pids if _running(p)] == []
    assert not (REGISTRY / f"{extra.prefix}.json").exists()
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert extra.gateway + "/" not in addrs
    assert _ssh(lan, "h1")[0] == 0  # the session LAN is untouched


def test_crashed_owner_lan_is_cleaned_up(lan_required: None, tmp_path: Path) -> None:
    code = (
        f"import os, sys; sys.path.insert(0, {str(LANLIB.parent)!r}); from lanlib import Lan; "
        f"lan = Lan.up(1, {str(tmp_path)!r}); print(lan.prefix, flush=True); os._exit(0)"
    )
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    prefix = cp.stdout.strip()
    assert cp.returncode == 0 and prefix and _leftovers(prefix), cp.stderr
    assert prefix in cleanup_stale()
    assert _leftovers(prefix) == []


def test_cli_up_status_down(lan_required: None, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(LANLIB), *args], capture_output=True, text=True, timeout=60
        )

    up = cli("up", "1", "--dir", str(tmp_path))
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((tmp_path / "lan.json").read_text())
        assert any(
            s["prefix"] == state["prefix"] and s["owner"] == "detached"
            for s in json.loads(cli("status").stdout)
        )
        assert cli("cleanup").returncode == 0 and _leftovers(state["prefix"])  # detached: kept
        ssh = subprocess.run(
            ["ssh", "-F", str(tmp_path / "ssh_config"), "h1", "true"],
            capture_output=True,
            timeout=20,
        )
        assert ssh.returncode == 0, ssh.stderr
        assert (tmp_path / "hosts.toml").exists()
    finally:
        down = cli("down", "--dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert _leftovers(state["prefix"]) == []
