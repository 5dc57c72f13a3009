#!/usr/bin/env python3
"""A test LAN of real OpenSSH hosts, each in its own Linux network and mount namespace.

Contract
--------
``Lan.up(n, base_dir)`` starts ``n`` hosts ``h1..hn``.  Each host is:

* a network namespace ``<prefix>h<i>`` whose ``eth0`` is one end of a veth pair; the other
  end (``<prefix>v<i>``) is enslaved to a bridge ``<prefix>br`` in the root namespace.
  The root namespace (the "laptop") has ``198.18.X.1/24`` on the bridge, hosts have
  ``198.18.X.11``, ``.12``...  ``X`` is the first /24 of 198.18.0.0/15 not used by anything
  else on this machine.  Hosts get no default route: they can reach the laptop and each
  other, nothing else.
* a UTS namespace (its hostname is its name) and a mount namespace
  (``unshare --mount --propagation private``) in which private
  directories under ``base_dir/hosts/<name>/`` are bind-mounted over ``/root`` (holding
  ``.ssh/authorized_keys``), ``/tmp``, ``/var/tmp``, ``/run``, ``/etc/ssh`` (its own host key
  and ``sshd_config``) and the work dir ``/srv/mapred``; a private tmpfs covers ``/dev/shm``;
  ``base_dir`` and this repository are covered by empty tmpfs mounts; and the root
  filesystem is remounted read-only *in that namespace only*.  So hosts share no writable
  path with the laptop or each other and cannot read the client's private key.
* a real ``sshd -D -e`` (key auth only) listening on its address, port 22, logging to
  ``base_dir/hosts/<name>/sshd.log``.

The client side lives in ``base_dir/client/`` (``id_ed25519``, ``known_hosts``) and
``base_dir/ssh_config``.  Hosts run Python from a venv made from Debian's ``/usr/bin/python3``
at ``/opt/mapred-lan/venv`` (``Lan.python``; ``$MAPRED_LAN_VENV`` if set), created once and
cached; install mapred into it as a regular (non-editable) install: the repository is hidden
from hosts.

Every LAN is recorded in ``/run/mapred-lan/<prefix>.json`` before anything is created, so a LAN
whose owning process died is torn down by the next ``Lan.up`` (or ``lanlib.py cleanup``).
A LAN started from the CLI (``up``) has no owner and lives until ``down``.

Only loopback and the 198.18.0.0/15 addresses created here are ever contacted.

CLI::

    python tests/lanlib.py up 3 --dir /tmp/lan      # prints ssh_config / hosts.toml paths
    python tests/lanlib.py status
    python tests/lanlib.py down --dir /tmp/lan      # or: down --all
    python tests/lanlib.py cleanup                  # LANs whose owner process died
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/, for sysdeps
import sysdeps  # noqa: E402

POOL = ipaddress.IPv4Network("198.18.0.0/15")
REGISTRY = Path("/run/mapred-lan")
# the hosts' venv; MAPRED_LAN_VENV gives a session its own (one venv holds one mapred: two
# sessions installing their trees into the same venv would test each other's code)
VENV = Path(os.environ.get("MAPRED_LAN_VENV", "/opt/mapred-lan/venv"))
WORKDIR = "/srv/mapred"
SYSTEM_PYTHON = "/usr/bin/python3"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_ROOT = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^(mrl([0-9a-f]+)x\d+)(?:br|v\d+|h\d+)$")
REQUIRED_TOOLS = ("sshd", "ssh", "ssh-keygen", "rsync", "ip", "tc", "unshare", "nsenter", "mount",
                  "/usr/lib/python3*/ensurepip/__init__.py")
FIRST_HOST_OCTET = 11

Cmd = str | Sequence[str | bytes | os.PathLike]


class LanError(RuntimeError):
    """A LAN operation failed; the message names the command and its stderr."""


class LanUnsupported(LanError):
    """This kernel or machine cannot do what was asked (e.g. no sch_netem)."""


# --------------------------------------------------------------------------- small helpers


def _run(
    args: Sequence[Any], *, check: bool = True, timeout: float = 30, **kw: Any
) -> subprocess.CompletedProcess:
    """Run a local command; on failure raise LanError carrying the command and its stderr."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    argv = [str(a) if isinstance(a, os.PathLike) else a for a in args]
    try:
        cp = subprocess.run(argv, timeout=timeout, **kw)  # noqa: S603 - fixed argv, no shell
    except subprocess.TimeoutExpired as e:
        raise LanError(f"timed out after {timeout}s: {shlex.join(map(str, argv))}") from e
    if check and cp.returncode != 0:
        raise LanError(
            f"{shlex.join(map(str, argv))} -> exit {cp.returncode}: {str(cp.stderr).strip()}"
        )
    return cp


def _host_env() -> dict[str, str]:
    """A clean environment: nothing of the laptop's venv/pyenv leaks into a host."""
    return {
        "PATH": HOST_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "USER": "root",
        "LOGNAME": "root",
    }


def _proc_start(pid: int) -> str | None:
    """The kernel start time of pid (guards against pid reuse), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int | None, start: str | None = None) -> bool:
    if not pid:
        return False
    now = _proc_start(pid)
    return now is not None and (start is None or now == start)


def _netns_pids(netns: str) -> list[int]:
    cp = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in cp.stdout.split()] if cp.returncode == 0 else []


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_netns(netns: str) -> None:
    """SIGSTOP every process in netns, again for those forked meanwhile."""
    seen: set[int] = set()
    for _ in range(20):
        new = [p for p in _netns_pids(netns) if p not in seen]
        if not new:
            return
        _signal_all(new, signal.SIGSTOP)
        seen.update(new)
        time.sleep(0.01)


def _kill_netns(netns: str, timeout: float = 10) -> None:
    """SIGKILL every process in netns until none is left (they may be forking). They are all
    stopped first, as a power cut stops them: killed one by one, a process could see another
    die (an agent seeing its sshd's pipe close) and act on it before its own SIGKILL."""
    deadline = time.monotonic() + timeout
    _stop_netns(netns)
    while pids := _netns_pids(netns):
        _signal_all(pids, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LanError(f"processes in {netns} survive SIGKILL: {pids}")
        time.sleep(0.02)


def _disable_ipv6(ifname: str, netns: str | None = None) -> None:
    """Our links carry IPv4 only: no router solicitations or MLD chatter from them."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    _run([*prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"], check=False)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _parse_rate(rate: int | str) -> int:
    """'4mbit' / '500kbit' / 1_000_000 -> bits per second."""
    if isinstance(rate, int):
        return rate
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*", rate.lower())
    if not m:
        raise ValueError(f"rate {rate!r}: use an int (bit/s) or a string like '4mbit'")
    return int(float(m[1]) * {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}[m[2]])


# --------------------------------------------------------------------------- registry


def _state_path(prefix: str) -> Path:
    return REGISTRY / f"{prefix}.json"


def _save_state(state: dict[str, Any]) -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(state["prefix"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path(state["prefix"]))
    base = Path(state["base_dir"])
    if base.is_dir():
        (base / "lan.json").write_text(json.dumps(state, indent=2))


def _load_states() -> list[dict[str, Any]]:
    states = []
    for p in sorted(REGISTRY.glob("*.json")) if REGISTRY.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads(p.read_text()))
    return states


def _owner_alive(state: dict[str, Any]) -> bool:
    return _alive(state.get("owner_pid"), state.get("owner_start"))


def _teardown(state: dict[str, Any]) -> None:
    """Remove everything a LAN state describes; idempotent, tolerant of half-built LANs."""
    for h in state.get("hosts", []):
        _kill_netns(h["netns"])
    for h in state.get("hosts", []):
        _run(["ip", "link", "del", h["veth"]], check=False)
        _run(["ip", "netns", "del", h["netns"]], check=False)
    _run(["ip", "link", "del", state["bridge"]], check=False)
    with contextlib.suppress(FileNotFoundError):
        _state_path(state["prefix"]).unlink()


def _our_names() -> tuple[list[str], list[str]]:
    """(netns names, link names) on this machine that look like ours."""
    ns = [
        line.split()[0]
        for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines()
        if line
    ]
    links = [
        link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")
    ]
    return [n for n in ns if NAME_RE.match(n)], [n for n in links if NAME_RE.match(n)]


def cleanup_stale(include_detached: bool = False) -> list[str]:
    """Tear down LANs whose owner process is gone (and orphan namespaces/links); return prefixes."""
    removed = []
    for state in _load_states():
        detached = state.get("owner_pid") is None
        if (detached and include_detached) or (not detached and not _owner_alive(state)):
            _teardown(state)
            removed.append(state["prefix"])
    known = {s["prefix"] for s in _load_states()}
    netns, links = _our_names()
    for name in netns + links:
        m = NAME_RE.match(name)
        assert m is not None
        if m[1] in known or _alive(int(m[2], 16)):
            continue
        if name in netns:
            _kill_netns(name)
            _run(["ip", "netns", "del", name], check=False)
        else:
            _run(["ip", "link", "del", name], check=False)
        removed.append(m[1])
    return sorted(set(removed))


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine already uses: addresses, routes, registered LANs."""
    used = [ipaddress.ip_network(s["subnet"]) for s in _load_states()]
    for iface in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for a in iface.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for r in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        if r.get("dst") and r["dst"] != "default":
            used.append(ipaddress.ip_network(r["dst"], strict=False))
    return [u for u in used if isinstance(u, ipaddress.IPv4Network)]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for cand in POOL.subnets(new_prefix=24):
        if not any(cand.overlaps(u) for u in used):
            return cand
    raise LanError("no free /24 left in 198.18.0.0/15")


def _new_prefix() -> str:
    known = {s["prefix"] for s in _load_states()}
    netns, links = _our_names()
    taken = known | {NAME_RE.match(n)[1] for n in netns + links}  # type: ignore[index]
    k = 0
    while (prefix := f"mrl{os.getpid():x}x{k}") in taken:
        k += 1
    return prefix


# --------------------------------------------------------------------------- venv


def ensure_venv(path: Path = VENV, python: str = SYSTEM_PYTHON) -> Path:
    """Create (once; cached across runs) a venv from Debian's python at a host-visible path."""
    exe = path / "bin" / "python"
    with _locked(path.parent / ".venv.lock"):
        if exe.exists() and _run([exe, "-c", "import sys"], check=False).returncode == 0:
            return exe
        shutil.rmtree(path, ignore_errors=True)
        _run([python, "-m", "venv", path], timeout=300, env=_host_env())
    return exe


# --------------------------------------------------------------------------- hosts


@dataclass(eq=False)
class Host:
    """One LAN host: a network namespace + a private mount namespace + sshd."""

    lan: Lan = field(repr=False)
    index: int
    name: str
    address: str
    netns: str
    veth: str  # the root-namespace end of this host's veth pair (a bridge port)
    dir: Path = field(repr=False)
    sshd_pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _flapping: threading.Event | None = field(default=None, repr=False)
    _flapper: threading.Thread | None = field(default=None, repr=False)

    # ---- inspection
    def alive(self) -> bool:
        """True while the sshd listener process exists (stopped counts as alive)."""
        return _alive(self.sshd_pid)

    def pids(self) -> list[int]:
        """Every process of this host except sshd's listener itself."""
        return [p for p in _netns_pids(self.netns) if p != self.sshd_pid]

    def run(
        self,
        cmd: Cmd,
        *,
        input: str | bytes | None = None,
        timeout: float = 60,
        check: bool = False,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run cmd (a shell string, or an argv of str/bytes) inside this host's namespaces."""
        if not self.alive():
            raise LanError(f"host {self.name} is down (no sshd); restart() it first")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = ["nsenter", "-t", str(self.sshd_pid), "-m", "-u", "-n", "--", *argv]
        cp: subprocess.CompletedProcess = subprocess.run(  # noqa: S603 - argv, no shell here
            full,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=_host_env(),
            cwd="/",
            text=text,
            errors="surrogateescape" if text else None,
        )
        if check and cp.returncode != 0:
            raise LanError(f"{self.name}: {argv!r} -> exit {cp.returncode}: {cp.stderr!r}")
        return cp

    # ---- failures
    def kill(self) -> None:
        """SIGKILL every process of the host, sshd too: the host is dead until restart()."""
        _kill_netns(self.netns)
        if self._proc is not None:
            self._proc.wait(timeout=10)
            self._proc = None

    def freeze(self) -> None:
        """SIGSTOP all the host's processes: connections hang, nothing is reset."""
        _stop_netns(self.netns)

    def thaw(self) -> None:
        _signal_all(_netns_pids(self.netns), signal.SIGCONT)

    def link_down(self) -> None:
        """Take the host's eth0 down: packets to and from it vanish silently (no reset)."""
        _run(["ip", "-n", self.netns, "link", "set", "eth0", "down"])

    def link_up(self) -> None:
        _run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])

    def flap(self, down: float, up: float) -> None:
        """Take the link down for ``down`` seconds, up for ``up`` seconds, over and over (in a
        thread) until flap_stop() or heal(); the first cut is at once."""
        self.flap_stop()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.link_down()
                stop.wait(down)
                self.link_up()
                stop.wait(up)

        self._flapping, self._flapper = stop, threading.Thread(target=loop, daemon=True)
        self._flapper.start()

    def flap_stop(self) -> None:
        """Stop flap(), leaving the link up."""
        if self._flapping is not None and self._flapper is not None:
            self._flapping.set()
            self._flapper.join()
            self._flapping = self._flapper = None
            self.link_up()

    def netem(
        self,
        delay_ms: float | None = None,
        rate: int | str | None = None,
        *,
        jitter_ms: float | None = None,
        loss_pct: float | None = None,
    ) -> None:
        """Shape traffic in both directions (delay is added to each direction; rate caps each).

        A rate alone uses ``tbf``, which every kernel here has.  Delay, jitter and loss need
        ``sch_netem``; without it this raises LanUnsupported (and changes nothing).
        """
        if delay_ms is None and jitter_ms is None and loss_pct is None:
            if rate is None:
                raise ValueError("netem(): give delay_ms, rate, jitter_ms or loss_pct")
            return self._apply_qdisc(self._tbf_args(_parse_rate(rate)))
        args = ["netem", "delay", f"{delay_ms or 0}ms"]
        args += [f"{jitter_ms}ms"] if jitter_ms else []
        args += ["loss", f"{loss_pct}%"] if loss_pct else []
        args += ["rate", f"{_parse_rate(rate)}bit"] if rate is not None else []
        self._apply_qdisc(args)

    def netem_clear(self) -> None:
        for prefix, dev in self._qdisc_targets():
            _run([*prefix, "qdisc", "del", "dev", dev, "root"], check=False)

    def _qdisc_targets(self) -> list[tuple[list[str], str]]:
        # host egress (host -> anyone) and the bridge port's egress (anyone -> host)
        return [(["tc", "-n", self.netns], "eth0"), (["tc"], self.veth)]

    @staticmethod
    def _tbf_args(bits: int) -> list[str]:
        burst = max(bits // 8 // 100, 3200)  # >= one MTU frame, ~10 ms of traffic
        return ["tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "100ms"]

    def _apply_qdisc(self, args: list[str]) -> None:
        self.netem_clear()
        for prefix, dev in self._qdisc_targets():
            cp = _run([*prefix, "qdisc", "replace", "dev", dev, "root", *args], check=False)
            if cp.returncode != 0:
                self.netem_clear()
                if "unknown" in cp.stderr.lower() and args[0] == "netem":
                    raise LanUnsupported(
                        "this kernel has no sch_netem (CONFIG_NET_SCH_NETEM): delay/jitter/loss "
                        "cannot be emulated; rate limiting alone works (tbf)"
                    )
                raise LanError(f"tc qdisc on {dev}: {cp.stderr.strip()}")

    def small_disk(self, mb: int) -> None:
        """Mount an mb-MiB tmpfs over the host's work dir (hiding its contents): a small disk."""
        self.run(
            ["mount", "-t", "tmpfs", "-o", f"size={int(mb)}m,mode=0700", "mrl-small", WORKDIR],
            check=True,
        )

    def small_disk_clear(self) -> None:
        """Undo small_disk(): the work dir's earlier contents reappear."""
        while self._top_mount_source(WORKDIR) == "mrl-small":
            self.run(["umount", "-l", WORKDIR], check=True)

    def _top_mount_source(self, target: str) -> str | None:
        """Source of the topmost mount on target in the host's mount namespace."""
        try:
            info = Path(f"/proc/{self.sshd_pid}/mountinfo").read_text()
        except OSError:
            return None
        src = None
        for line in info.splitlines():
            parts = line.split()
            if parts[4] == target:
                src = parts[parts.index("-") + 2]
        return src

    def heal(self, timeout: float = 15) -> None:
        """Undo every injected failure: thaw, link up, no shaping, full disk back, sshd running."""
        self.flap_stop()
        self.thaw()
        self.link_up()
        self.netem_clear()
        if not self.alive():
            self.restart(timeout)
        self.small_disk_clear()

    def restart(self, timeout: float = 15) -> None:
        """Kill whatever is left of the host and start sshd again (files on its disk survive)."""
        self.kill()
        self._start(timeout)

    # ---- lifecycle (used by Lan)
    def _start(self, timeout: float) -> None:
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - inherited by sshd
        try:
            self._proc = subprocess.Popen(  # noqa: S603
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-ec",
                    self.lan._mount_script(self),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_host_env(),
                cwd="/",
            )
        finally:
            log.close()
        self.sshd_pid = self._proc.pid  # ip netns exec, unshare and sh all exec: same pid
        self._wait_ready(timeout)
        self.lan._save()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LanError(
                    f"sshd on {self.name} exited {self._proc.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, 22), timeout=0.5) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise LanError(f"sshd on {self.name} not answering after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.dir / "sshd.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""


# --------------------------------------------------------------------------- the LAN


SSHD_CONFIG = """\
# generated by tests/lanlib.py for host {name}
ListenAddress {address}:22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
AuthenticationMethods publickey
AllowAgentForwarding no
X11Forwarding no
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
"""


class Lan:
    """N sshd hosts on a private bridge; see the module docstring for the contract."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self.base_dir = Path(state["base_dir"])
        self.prefix: str = state["prefix"]
        self.subnet = ipaddress.ip_network(state["subnet"])
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge: str = state["bridge"]
        self.python: str = state["python"]
        self.workdir = WORKDIR
        self.hosts: list[Host] = []
        self._down = False

    # ---- paths
    @property
    def client_dir(self) -> Path:
        return self.base_dir / "client"

    @property
    def identity(self) -> Path:
        return self.client_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.client_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.base_dir / "ssh_config"

    @property
    def rsync_rsh(self) -> str:
        """The value for ``rsync -e``: the same ssh config as the command path."""
        return f"ssh -F {shlex.quote(str(self.ssh_config))}"

    def __getitem__(self, key: int | str) -> Host:
        if isinstance(key, int):
            return self.hosts[key]
        for h in self.hosts:
            if key in (h.name, h.address):
                return h
        raise KeyError(key)

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- preconditions
    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, "") when this machine can run a LAN, else (False, the reason)."""
        if not sys.platform.startswith("linux"):
            return False, "the test LAN needs Linux network namespaces"
        if os.geteuid() != 0:
            return False, "the test LAN needs root (network namespaces, bridges, mounts)"
        absent = sysdeps.missing(*REQUIRED_TOOLS)
        if absent:
            return False, sysdeps.reason(absent)
        probe = _run(["unshare", "--net", "--mount", "true"], check=False)
        if probe.returncode != 0:
            return False, f"cannot create namespaces: {probe.stderr.strip()}"
        return True, ""

    # ---- bring up
    @classmethod
    def up(
        cls,
        n: int,
        base_dir: str | os.PathLike,
        *,
        detached: bool = False,
        venv: Path | None = VENV,
        hide: Sequence[str | os.PathLike] = (),
        ready_timeout: float = 15,
    ) -> Lan:
        """Start n hosts; base_dir (created) holds keys, configs, logs and host disks.

        detached=True: no owner process (the CLI); otherwise the LAN is torn down at exit and
        by the next up() should this process die.  hide: extra laptop paths hosts must not see.
        """
        ok, why = cls.available()
        if not ok:
            raise LanUnsupported(why)
        if not 1 <= n <= 200:
            raise ValueError("n must be in 1..200")
        base = Path(base_dir).resolve()
        cls._refuse_live_lan_in(base)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o700)
        python = str(ensure_venv(venv)) if venv else SYSTEM_PYTHON
        lan = cls(cls._reserve(n, base, python, detached, [str(Path(p).resolve()) for p in hide]))
        if not detached:
            atexit.register(lan._down_at_exit)
        try:
            lan._build(ready_timeout)
        except BaseException:
            lan.down()
            raise
        return lan

    @staticmethod
    def _refuse_live_lan_in(base: Path) -> None:
        for state in _load_states():
            if Path(state["base_dir"]) == base:
                raise LanError(f"LAN {state['prefix']} already uses {base}: 'down --dir' it first")

    @staticmethod
    def _reserve(
        n: int, base: Path, python: str, detached: bool, hide: list[str]
    ) -> dict[str, Any]:
        """Pick names and a subnet and record them before creating anything (crash-safe)."""
        with _locked(REGISTRY / ".lock"):
            cleanup_stale()
            prefix, subnet = _new_prefix(), _free_subnet()
            owner = None if detached else os.getpid()
            state = {
                "prefix": prefix,
                "subnet": str(subnet),
                "bridge": f"{prefix}br",
                "base_dir": str(base),
                "python": python,
                "hide": hide,
                "owner_pid": owner,
                "owner_start": _proc_start(owner) if owner else None,
                "hosts": [
                    {
                        "name": f"h{i}",
                        "address": str(subnet.network_address + FIRST_HOST_OCTET - 1 + i),
                        "netns": f"{prefix}h{i}",
                        "veth": f"{prefix}v{i}",
                        "sshd_pid": None,
                    }
                    for i in range(1, n + 1)
                ],
            }
            _save_state(state)
        return state

    def _build(self, ready_timeout: float) -> None:
        self._make_bridge()
        self._make_client()
        for hs in self._state["hosts"]:
            host = Host(
                self,
                len(self.hosts) + 1,
                hs["name"],
                hs["address"],
                hs["netns"],
                hs["veth"],
                self.base_dir / "hosts" / hs["name"],
            )
            self.hosts.append(host)
            self._make_host_net(host)
            self._make_host_files(host)
        self._write_client_files()
        for host in self.hosts:
            host._start(ready_timeout)

    def _make_bridge(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _disable_ipv6(self.bridge)
        _run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _make_host_net(self, h: Host) -> None:
        tmp_peer = f"{self.prefix}p{h.index}"
        _run(["ip", "netns", "add", h.netns])
        _run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", tmp_peer])
        _disable_ipv6(h.veth)
        _run(["ip", "link", "set", tmp_peer, "netns", h.netns])
        _run(["ip", "-n", h.netns, "link", "set", tmp_peer, "name", "eth0"])
        _disable_ipv6("eth0", h.netns)
        _run(
            [
                "ip",
                "-n",
                h.netns,
                "addr",
                "add",
                f"{h.address}/{self.subnet.prefixlen}",
                "dev",
                "eth0",
            ]
        )
        _run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
        _run(["ip", "link", "set", h.veth, "master", self.bridge])
        _run(["ip", "link", "set", h.veth, "up"])

    def _make_client(self) -> None:
        self.client_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.identity.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"mapred-lan-client@{self.prefix}",
                    "-f",
                    self.identity,
                ]
            )

    def _make_host_files(self, h: Host) -> None:
        for sub, mode in (
            ("root/.ssh", 0o700),
            ("tmp", 0o1777),
            ("vartmp", 0o1777),
            ("run/sshd", 0o755),
            ("etc-ssh", 0o755),
            ("work", 0o700),
        ):
            d = h.dir / sub
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(mode)
        h.dir.chmod(0o700)
        (h.dir / "root").chmod(0o700)
        etc = h.dir / "etc-ssh"
        key = etc / "ssh_host_ed25519_key"
        if not key.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"{h.name}@{self.prefix}",
                    "-f",
                    key,
                ]
            )
        (etc / "sshd_config").write_text(SSHD_CONFIG.format(name=h.name, address=h.address))
        for f in ("moduli", "ssh_config"):
            if Path("/etc/ssh", f).exists():
                shutil.copy(Path("/etc/ssh", f), etc / f)
        ak = h.dir / "root/.ssh/authorized_keys"
        ak.write_text(Path(f"{self.identity}.pub").read_text())
        ak.chmod(0o600)

    def _write_client_files(self) -> None:
        lines = []
        for h in self.hosts:
            ktype, kb64 = (h.dir / "etc-ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
            lines.append(f"{h.address} {ktype} {kb64}\n")
        self.known_hosts.write_text("".join(lines))
        cfg = [f"Host {h.name}\n    HostName {h.address}\n" for h in self.hosts]
        cfg.append(
            "Host *\n"
            "    User root\n"
            f"    IdentityFile {self.identity}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    UpdateHostKeys no\n"
            "    BatchMode yes\n"
            "    PasswordAuthentication no\n"
            "    ForwardAgent no\n"
            "    ConnectTimeout 10\n"
            "    ServerAliveInterval 5\n"
            "    ServerAliveCountMax 3\n"
            "    LogLevel ERROR\n"
        )
        self.ssh_config.write_text("".join(cfg))

    def _mount_script(self, h: Host) -> str:
        """The shell run inside the host's fresh mount namespace before it execs sshd."""
        q = shlex.quote
        binds = [
            ("root", "/root"),
            ("tmp", "/tmp"),
            ("vartmp", "/var/tmp"),
            ("run", "/run"),
            ("etc-ssh", "/etc/ssh"),
            ("work", WORKDIR),
        ]
        # a target that contains base_dir (e.g. /tmp) hides the other sources: bind it last
        binds.sort(key=lambda b: h.dir.is_relative_to(b[1]))
        lines = [f"hostname {q(h.name)}", f"mkdir -p {q(WORKDIR)}"]
        lines += [f"mount --bind {q(str(h.dir / src))} {q(dst)}" for src, dst in binds]
        lines.append("mount -t tmpfs -o size=64m,mode=1777 mrl-shm /dev/shm")
        for path in self._hidden_paths():
            hide = f"mount -t tmpfs -o size=1m,mode=0700 mrl-hidden {q(path)}"
            lines.append(f"if [ -d {q(path)} ]; then {hide}; fi")
        # 'bind' makes this a per-mount flag in this namespace, never the shared superblock
        lines.append("mount -o remount,bind,ro /")
        lines.append("exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config")
        return "\n".join(lines)

    def _hidden_paths(self) -> list[str]:
        paths = [str(self.base_dir), *self._state.get("hide", [])]
        repo = str(REPO_ROOT)
        if repo != "/" and not Path(self.python).is_relative_to(repo):
            paths.append(repo)
        return paths

    def _save(self) -> None:
        for hs, h in zip(self._state["hosts"], self.hosts):
            hs["sshd_pid"] = h.sshd_pid
        if not self._down:
            _save_state(self._state)

    # ---- client helpers
    def ssh_argv(self, host: str | Host, command: str | None = None, *options: str) -> list[str]:
        """argv for ``ssh -F <ssh_config> [options] host [-- command]``."""
        name = host.name if isinstance(host, Host) else host
        return [
            "ssh",
            "-F",
            str(self.ssh_config),
            *options,
            name,
            *(["--", command] if command else []),
        ]

    def ssh(
        self,
        host: str | Host,
        command: str,
        *options: str,
        timeout: float = 30,
        input: Any = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run command on host over real ssh from the laptop; never raises on exit status."""
        return subprocess.run(  # noqa: S603
            self.ssh_argv(host, command, *options),
            input=input,
            capture_output=True,
            timeout=timeout,
            text=text,
        )

    def write_hosts_toml(self, path: str | os.PathLike, **defaults: Any) -> Path:
        """Write a mapred hosts.toml for this LAN; keyword arguments add/override [defaults]."""
        merged: dict[str, Any] = {
            "user": "root",
            "identity": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "python": self.python,
            "workdir": self.workdir,
        }
        merged.update(defaults)
        out = ["[defaults]"] + [f"{k} = {_toml(v)}" for k, v in merged.items()]
        for h in self.hosts:
            out += ["", "[[host]]", f"name = {_toml(h.name)}", f"address = {_toml(h.address)}"]
        p = Path(path)
        p.write_text("\n".join(out) + "\n")
        return p

    def heal(self) -> None:
        """Host.heal() on every host: after a test that injected failures."""
        for h in self.hosts:
            h.heal()

    def unused_address(self, n: int = 0) -> str:
        """An address in this LAN's subnet that no host has (the n-th from the top): ARP for it
        goes unanswered, so connecting fails after a few seconds (no route to host)."""
        address = str(self.subnet.broadcast_address - 1 - n)
        assert all(h.address != address for h in self.hosts), address
        return address

    def blackhole(self, address: str) -> None:
        """Make ``address`` (an unused one of this LAN) swallow packets: a permanent neighbour
        entry with a MAC no host has, so SYNs go out on the bridge and nothing ever answers
        (connecting times out, as with a host whose link is down). Gone with the bridge."""
        assert ipaddress.ip_address(address) in self.subnet and address != self.gateway
        assert all(h.address != address for h in self.hosts), address
        _run(["ip", "neigh", "replace", address, "lladdr", "02:00:5e:00:53:01", "dev",
              self.bridge, "nud", "permanent"])

    def unblackhole(self, address: str) -> None:
        _run(["ip", "neigh", "del", address, "dev", self.bridge], check=False)

    # ---- tear down
    def down(self) -> None:
        """Kill every host process, delete namespaces, veths and bridge. Idempotent."""
        if self._down:
            return
        self._down = True
        for h in self.hosts:
            h.kill()
        _teardown(self._state)
        atexit.unregister(self._down_at_exit)

    def _down_at_exit(self) -> None:
        if os.getpid() == self._state["owner_pid"]:  # not in a forked child that exits
            self.down()

    @classmethod
    def load(cls, base_dir: str | os.PathLike) -> Lan:
        """Re-attach to a LAN (e.g. one made by the CLI) from base_dir/lan.json."""
        state = json.loads((Path(base_dir) / "lan.json").read_text())
        lan = cls(state)
        for i, hs in enumerate(state["hosts"], 1):
            h = Host(
                lan,
                i,
                hs["name"],
                hs["address"],
                hs["netns"],
                hs["veth"],
                lan.base_dir / "hosts" / hs["name"],
                hs.get("sshd_pid"),
            )
            lan.hosts.append(h)
        return lan

    @staticmethod
    def status() -> list[dict[str, Any]]:
        """Every registered LAN with owner and per-host liveness."""
        out = []
        for s in _load_states():
            hosts = [
                {"name": h["name"], "address": h["address"], "alive": _alive(h.get("sshd_pid"))}
                for h in s["hosts"]
            ]
            owner = (
                "detached"
                if s.get("owner_pid") is None
                else (f"pid {s['owner_pid']}" + ("" if _owner_alive(s) else " (dead: stale)"))
            )
            out.append(
                {
                    "prefix": s["prefix"],
                    "subnet": s["subnet"],
                    "base_dir": s["base_dir"],
                    "owner": owner,
                    "hosts": hosts,
                }
            )
        return out


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="lanlib.py", description="test LAN of sshd hosts in namespaces"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start N hosts (detached: stays up until 'down')")
    up.add_argument("n", type=int)
    up.add_argument("--dir", required=True, help="base dir for keys, configs, logs, host disks")
    down = sub.add_parser("down", help="tear a LAN down")
    g = down.add_mutually_exclusive_group(required=True)
    g.add_argument("--dir")
    g.add_argument(
        "--all",
        action="store_true",
        help="every detached or stale LAN (not those of live test runs)",
    )
    sub.add_parser("status", help="list LANs")
    sub.add_parser("cleanup", help="tear down LANs whose owner process died")
    a = ap.parse_args(argv)
    try:
        return _dispatch(a)
    except LanError as e:
        print(f"lanlib: {e}", file=sys.stderr)
        return 1


def _dispatch(a: argparse.Namespace) -> int:
    if a.cmd == "up":
        lan = Lan.up(a.n, a.dir, detached=True)
        toml = lan.write_hosts_toml(lan.base_dir / "hosts.toml")
        print(
            f"LAN {lan.prefix} on {lan.subnet}: "
            + ", ".join(f"{h.name}={h.address}" for h in lan.hosts)
        )
        print(f"ssh_config: {lan.ssh_config}   (ssh -F {lan.ssh_config} h1)")
        print(f"hosts.toml: {toml}")
        print(f"python:     {lan.python}")
    elif a.cmd == "down":
        if a.all:
            print("removed:", " ".join(cleanup_stale(include_detached=True)) or "nothing")
        else:
            Lan.load(a.dir).down()
    elif a.cmd == "status":
        print(json.dumps(Lan.status(), indent=2))
    else:
        print("removed:", " ".join(cleanup_stale()) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
