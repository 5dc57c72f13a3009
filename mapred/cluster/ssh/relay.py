"""A reducer's inputs on an SSH host: direct rsync URLs, or relay port forwards."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from mapred.cluster.ssh.shuffle import _bridge
from mapred.cluster.ssh.state import TransportState
from mapred.errors import JobError
from mapred.modes import RELAY

if TYPE_CHECKING:
    from mapred.cluster.ssh.remote import SSHTransport

log = logging.getLogger("mapred")


class RelayMixin(TransportState):
    """A reducer's inputs on an SSH host: direct rsync URLs, or relay port forwards."""

    def reduce_inputs(self, inputs: list[tuple[str, str]]) -> list[Any]:
        out: list[Any] = []
        with self.group.lock:
            sums = {key: self.group.sums.get(key) for key in inputs}
        for host, path in inputs:
            check = sums[(host, path)]
            if host == self.name:
                out.append(path if check is None else
                           {"path": path, "host": host, "size": check[0], "sha256": check[1]})
                continue
            peer = self.group.peer(host)
            if peer is None or not peer._info.get("daemon"):
                raise JobError(f"map output {path} is on host {host!r}, which host {self.name} "
                               "cannot fetch from (not an SSH host of this run)")
            daemon = peer._info["daemon"]
            rel = os.path.relpath(path, daemon["root"])
            if rel.startswith(".."):
                raise JobError(f"map output {path} on host {host} is outside its run's map dir")
            if self.shuffle == RELAY:
                where = f"127.0.0.1:{self._relay_port(peer)}"
            else:
                addr = daemon["address"]
                where = f"[{addr}]:{daemon['port']}" if ":" in addr else \
                    f"{addr}:{daemon['port']}"
            item: dict[str, Any] = {
                "url": f"rsync://{daemon['user']}@{where}/{daemon['module']}/{rel}",
                "host": host}
            if check is not None:
                item.update(size=check[0], sha256=check[1])
            out.append(item)
        return out

    def _relay_port(self, peer: SSHTransport) -> int:
        """A port on this host's loopback forwarded, through the laptop, to peer's daemon."""
        with self._lock:
            if peer.name in self._relays:
                return self._relays[peer.name]
        port = int(self._conns[0].transport.request_port_forward("127.0.0.1", 0,
                                                                 handler=self._relay_handler))
        with self._lock:
            self._relays[peer.name] = port
            self._relay_peer[port] = peer
        return port

    def _relay_handler(self, chan: Any, origin: Any, server: Any) -> None:
        peer = self._relay_peer.get(int(server[1]))
        if peer is None:
            chan.close()
            return
        threading.Thread(target=_bridge, args=(chan, peer), daemon=True).start()
