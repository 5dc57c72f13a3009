"""Shuffle peers of one job (:class:`ShuffleGroup`) and the relay bridge to a peer's daemon."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

from mapred.cluster.ssh.connect import REQUEST_TIMEOUT
from mapred.errors import JobError, NoHostsError
from mapred.limits import ALLOW_TIMEOUT, RSYNC_TIMEOUT

if TYPE_CHECKING:
    from mapred.cluster.ssh.remote import SSHTransport

log = logging.getLogger("mapred")


class ShuffleGroup:
    """The transports of one job: they find each other's shuffle daemons; one per-job secret."""

    def __init__(self) -> None:
        self.secret = secrets.token_hex(32)
        self.members: dict[str, SSHTransport] = {}
        self.used = False
        self.lock = threading.Lock()
        self.sums: dict[tuple[str, str], tuple[int, str]] = {}  # (host, map output) -> size, sha
        self.addresses: set[str] = set()  # of the admitted members' hosts
        self.admitted: list[SSHTransport] = []
        self.admit_lock = threading.RLock()  # (a peer lost while admitting leaves)

    def join(self, t: SSHTransport) -> None:
        with self.lock:
            self.members[t.name] = t
            self.used = True

    def admit(self, t: SSHTransport) -> None:
        """Direct shuffle: before ``t`` is used, every member's daemon (``t``'s too) accepts
        connections from the addresses of every admitted member's host, and from no others."""
        with self.admit_lock:  # one at a time: each member ends with the whole set
            self.addresses.update(str(a) for a in t._info.get("addresses", []))
            everyone = sorted(self.addresses)
            t.agent_request("allow", wait=True, addresses=everyone)
            for m in self.admitted:
                try:
                    m.agent_request("allow", wait=True, timeout=ALLOW_TIMEOUT, addresses=everyone)
                except (JobError, NoHostsError) as e:  # lost meanwhile: its watch says so
                    log.info("host %s: not told about %s: %s", m.name, t.name, e)
            self.admitted.append(t)

    def leave(self, t: SSHTransport) -> None:
        with self.lock:
            if self.members.get(t.name) is t:
                del self.members[t.name]
        with self.admit_lock:
            if t in self.admitted:
                self.admitted.remove(t)

    def peer(self, name: str) -> SSHTransport | None:
        with self.lock:
            return self.members.get(name)

    def holders(self, digest: str, exclude: SSHTransport) -> list[SSHTransport]:
        """Members other than ``exclude``, not lost, that have the shard ``digest`` cached (the
        receiving host checks the copy; verified copies first)."""
        with self.lock:
            members = list(self.members.values())
        found = [m for m in members if m is not exclude and getattr(m, "_lost", None) is None
                 and digest in m._cached]
        return sorted(found, key=lambda m: digest not in getattr(m, "_verified", ()))


def _bridge(chan: Any, peer: SSHTransport) -> None:
    """Relay shuffle: copy bytes between a forwarded channel and peer's daemon, both ways."""
    daemon = peer._info["daemon"]
    try:
        other = peer._conns[0].transport.open_channel(
            "direct-tcpip", (daemon["address"], int(daemon["port"])), ("127.0.0.1", 0),
            timeout=REQUEST_TIMEOUT)
    except Exception:  # noqa: BLE001 - the fetch fails and says so
        chan.close()
        return

    def pump(src: Any, dst: Any) -> None:
        try:
            for chunk in iter(lambda: src.recv(1 << 16), b""):
                dst.sendall(chunk)
        except Exception:  # noqa: BLE001,S110 - either side closed
            pass
        try:
            dst.shutdown_write()
        except Exception:  # noqa: BLE001,S110
            pass

    t = threading.Thread(target=pump, args=(other, chan), daemon=True)
    t.start()
    pump(chan, other)
    t.join(RSYNC_TIMEOUT * 2)
    chan.close()
    other.close()
