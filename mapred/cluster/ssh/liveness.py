"""An SSH host's liveness: its agent's silence, flapping, losing the host once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mapred.cluster.ssh.state import TransportState
from mapred.limits import (
    DEAD_AFTER,
    FLAP_LIMIT,
    FLAP_SILENCE,
    FLAP_WINDOW,
    WATCH_SECONDS,
)

log = logging.getLogger("mapred")


class LivenessMixin(TransportState):
    """An SSH host's liveness: its agent's silence, flapping, losing the host once."""

    def _watch(self) -> None:
        """Ping the agent; a host silent for DEAD_AFTER seconds is lost (its workers end); one
        that keeps going silent for a few seconds and coming back is flapping."""
        agent = self._agent
        assert agent is not None
        counted = 0  # dropouts seen so far
        while not self._closed and self._lost is None:
            time.sleep(WATCH_SECONDS)
            if self._closed:
                return
            now = time.monotonic()
            silent = now - agent.last_seen
            if agent.closed.is_set() or silent > DEAD_AFTER:
                why = "its agent ended (connection closed)" if agent.closed.is_set() else \
                    f"no answer for {silent:.1f}s"
                self._lose(f"host {self.name} lost: {why}")
                return
            if len(agent.dropouts) > counted:
                counted = len(agent.dropouts)
                recent = [t for t in agent.dropouts if now - t < FLAP_WINDOW]
                if len(recent) >= FLAP_LIMIT:
                    self._flapping(f"host {self.name} keeps dropping out: silent for "
                                   f"{FLAP_SILENCE:g}s or more {len(recent)} times in "
                                   f"{now - recent[0] + FLAP_SILENCE:.0f}s")
            agent.send({"op": "ping"})

    def _flapping(self, reason: str) -> None:
        log.debug("%s", reason)
        for callback in list(self._on_flap):
            callback(self.name, reason)

    def watch(self, on_lost: Callable[[str, str], None],
              on_flap: Callable[[str, str], None] | None = None) -> None:
        """Call ``on_lost(host, reason)`` once when this host is lost (at once if it is), and
        ``on_flap(host, reason)`` each time it comes back from a silence that makes it flapping
        (the caller decides what to do: it may be the last host)."""
        if on_flap is not None:
            self._on_flap.append(on_flap)
        with self._lost_lock:
            self._on_lost.append(on_lost)
            lost = self._lost
        if lost is not None:
            on_lost(self.name, lost)

    @property
    def lost(self) -> str | None:
        return self._lost

    def lose(self, reason: str) -> None:
        """Give the host up for the rest of the run (the runner decided it is unusable)."""
        self._lose(reason)

    def _check_connection(self, chan: Any) -> None:
        """After a worker channel ended: if it was because the connection died, the host is lost.

        paramiko closes a dying connection's channels a moment before it marks the connection
        inactive, hence the short wait when the channel brought no exit status."""
        if self._closed or self._lost is not None:
            return
        transport = chan.get_transport() if chan is not None else \
            (self._conns[0].transport if self._conns else None)
        if chan is not None and chan.exit_status_ready() and chan.exit_status >= 0:
            return  # the worker process exited: the connection is fine
        for _ in range(10):
            if transport is None or not transport.is_active():
                self._lose(f"host {self.name} lost: its SSH connection broke")
                return
            time.sleep(0.05)

    def _lose(self, reason: str) -> None:
        with self._lost_lock:  # callers wait until the callbacks heard it
            if self._closed or self._lost is not None:
                return
            self._lost = reason
            log.log(logging.DEBUG if self._on_lost else logging.WARNING, "%s", reason)
            for callback in self._on_lost:
                callback(self.name, reason)
        for w in self._workers:
            w.note(f"\n{reason}\n".encode())
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._kill_procs()
        agent = self._agent
        if agent is not None:  # if it ever hears it (a frozen host that thaws): keep nothing
            sender = threading.Thread(target=agent.send, args=({"op": "stop"},), daemon=True)
            sender.start()
            sender.join(1.0)
        for conn in self._conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001,S110 - closing a broken connection
                pass

    def _kill_procs(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            p.kill()
