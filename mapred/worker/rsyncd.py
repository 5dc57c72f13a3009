"""The per-run rsync daemon on a host (standard library only): map outputs and the shard cache,
served to the run's other hosts.

``rsync --daemon --no-detach``, read only, two modules (the scratch ``map`` dir and the shard
cache), one user whose password is the run's secret (in 0600 files, never on a command line).
Connections are accepted only from the addresses of the run's hosts: at first from this host's own
addresses (``/proc/net``), then from the set the coordinator sends (``allow``) as hosts join.
rsync reads its configuration again at every connection, so ``allow`` rewrites it in place
(atomically). The bytes travel in clear text on the LAN; the password is sent as a challenge
response, never in clear (see the README's security section).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from mapred.limits import FETCH_TIMEOUT

SHUFFLE_DIR = ".shuffle"  # under the run's scratch dir: secrets, daemon config and log
PASSWORD_FILE = "password"  # noqa: S105 - a file name
SHUFFLE_USER = "mapred"
SHUFFLE_MODULE = "map"  # the daemon's module: the run's scratch "map" directory
CACHE_MODULE = "cache"  # and the shard cache, so a host can copy a shard another host has


class Daemon:
    """One run's daemon on this host: ``start``, ``allow`` more peers, ``stop``."""

    def __init__(self, scratch: Path, cache: Path, secret: str) -> None:
        self.scratch, self.cache, self.secret = scratch, cache, secret
        self.dir = scratch / SHUFFLE_DIR
        self.conf = self.dir / "rsyncd.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.allowed = set(local_addresses())

    def start(self, address: str) -> dict[str, Any]:
        """Listen on ``address`` (a free port); what peers need to reach it."""
        _write_private(self.dir / PASSWORD_FILE, self.secret + "\n")
        _write_private(self.dir / "secrets", f"{SHUFFLE_USER}:{self.secret}\n")
        self._write_config()
        error = ""
        for _ in range(8):
            port = _free_port(address)
            proc = subprocess.Popen(
                ["rsync", "--daemon", "--no-detach", f"--address={address}", f"--port={port}",
                 f"--config={self.conf}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, cwd=str(self.scratch))
            error = _wait_listening(proc, address, port)
            if not error:
                self.proc = proc
                return {"address": address, "port": port, "user": SHUFFLE_USER,
                        "module": SHUFFLE_MODULE, "root": str(self.scratch / "map")}
        raise RuntimeError(f"cannot start the shuffle rsync daemon on {address}: {error}")

    def allow(self, addresses: list[str]) -> None:
        """Accept connections from these addresses too (the run's hosts)."""
        new = {str(ipaddress.ip_address(a)) for a in addresses}  # ValueError: not an address
        if not new <= self.allowed:
            self.allowed |= new
            self._write_config()

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    def _write_config(self) -> None:
        tmp = self.conf.with_name(f".{self.conf.name}.tmp")
        tmp.unlink(missing_ok=True)
        _write_private(tmp, daemon_config(self.scratch, self.cache, os.geteuid(), os.getegid(),
                                          sorted(self.allowed)))
        os.replace(tmp, self.conf)


def daemon_config(scratch: Path, cache: Path, uid: int, gid: int, allow: list[str]) -> str:
    sdir = scratch / SHUFFLE_DIR
    module = ["read only = yes", "list = no", f"auth users = {SHUFFLE_USER}",
              f"secrets file = {sdir / 'secrets'}", "strict modes = yes", "numeric ids = yes",
              "open noatime = yes", f"hosts allow = {' '.join(allow)}", "hosts deny = *", ""]
    return "\n".join([
        f"uid = {uid}", f"gid = {gid}", "use chroot = no", "reverse lookup = no",
        "forward lookup = no", "max connections = 0", f"log file = {sdir / 'rsyncd.log'}",
        "transfer logging = no", f"timeout = {FETCH_TIMEOUT}", "",
        f"[{SHUFFLE_MODULE}]", f"path = {scratch / 'map'}", *module,
        f"[{CACHE_MODULE}]", f"path = {cache}", *module,
    ])


def local_addresses() -> list[str]:
    """Every address of this host, loopback included (Linux: /proc/net); IPv6 link-local ones
    are left out (a peer would need their interface)."""
    found = {"127.0.0.1", "::1"}
    try:
        last = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            line = line.strip()
            if line.startswith("|-- "):
                last = line[4:]
            elif line == "/32 host LOCAL" and last:
                found.add(last)
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            addr = ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))
            if not addr.is_link_local:
                found.add(str(addr))
    except (OSError, ValueError, IndexError):
        pass
    return sorted(found)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], address: str, port: int) -> str:
    """'' once the daemon accepts connections, else why it did not."""
    deadline = time.monotonic() + 5
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            return proc.stderr.read().decode("utf-8", "replace").strip()[-300:]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return ""
        time.sleep(0.01)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    return "not listening after 5s"
