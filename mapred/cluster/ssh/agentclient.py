"""The coordinator side of a host agent (:mod:`mapred.worker.agent`): one SSH channel, JSON lines."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from mapred.cluster.ssh.connect import REQUEST_TIMEOUT, RemoteError
from mapred.limits import FLAP_SILENCE, STDERR_TAIL

log = logging.getLogger("mapred")


class AgentChannel:
    """The laptop side of ``python -m mapred.worker.agent``: requests, replies, liveness."""

    def __init__(self, chan: Any, label: str, command: str) -> None:
        self.chan, self.label, self.command = chan, label, command
        self._stderr_done = threading.Event()
        self.started: Future[dict[str, Any]] = Future()
        self.bye = threading.Event()
        self.closed = threading.Event()
        self.last_seen = time.monotonic()
        self.dropouts: list[float] = []  # when a line came after FLAP_SILENCE s of silence
        self._replies: dict[int, Future[dict[str, Any]]] = {}
        self._ids = 0
        self._lock = threading.Lock()
        self._stderr = bytearray()
        threading.Thread(target=self._read, daemon=True, name=f"agent-{label}").start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.chan.makefile("rb"):
                t = time.monotonic()
                if t - self.last_seen > FLAP_SILENCE and self.started.done():  # (not a slow start)
                    log.debug("host %s: back after %.1fs of silence", self.label,
                              t - self.last_seen)
                    self.dropouts.append(t)
                self.last_seen = t
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                self._dispatch(msg)
        except Exception:  # noqa: BLE001,S110 - the connection died: handled below
            pass
        self._stderr_done.wait(2.0)
        self.chan.status_event.wait(2.0)  # the exit status may come just after the output ends
        code = self.chan.recv_exit_status() if self.chan.exit_status_ready() else None
        self.closed.set()
        err = RemoteError(self.label, self.command, code, self.stderr(), why="ended")
        if not self.started.done():
            self.started.set_exception(err)
        for fut in list(self._replies.values()):
            if not fut.done():
                fut.set_exception(err)

    def _read_stderr(self) -> None:
        try:
            for chunk in iter(lambda: self.chan.recv_stderr(4096), b""):
                self._stderr += chunk
                del self._stderr[:-STDERR_TAIL]
        except Exception:  # noqa: BLE001,S110 - ends with the channel
            pass
        self._stderr_done.set()

    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        ev = msg.get("ev")
        if ev == "started" and not self.started.done():
            self.started.set_result(msg)
        elif ev == "start_failed" and not self.started.done():
            self.started.set_exception(RemoteError(self.label, "starting the mapred agent",
                                                   None, str(msg.get("error")), why="failed"))
        elif ev == "reply":
            fut = self._replies.pop(int(msg.get("id") or 0), None)
            if fut is not None:
                fut.set_result(msg)
        elif ev == "bye":
            self.bye.set()

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            try:
                self.chan.sendall(data)
            except Exception:  # noqa: BLE001,S110 - the reader reports the end
                pass

    def request(self, op: str, *, wait: bool = False, timeout: float = REQUEST_TIMEOUT,
                give_up: Callable[[], str | None] | None = None,
                **fields: Any) -> dict[str, Any]:
        """Send a request; with ``wait``, its reply (raises RemoteError on error or timeout, or
        as soon as ``give_up()`` returns a reason)."""
        msg: dict[str, Any] = {"op": op, **fields}
        fut: Future[dict[str, Any]] | None = None
        if wait:
            with self._lock:
                self._ids += 1
                msg["id"] = self._ids
                fut = Future()
                self._replies[self._ids] = fut
        self.send(msg)
        if fut is None:
            return {}
        if self.closed.is_set() and not fut.done():  # the reader is gone: no reply will come
            raise RemoteError(self.label, f"agent request {op!r}", None, why="failed: agent ended")
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = fut.result(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                break
            except TimeoutError:
                why = give_up() if give_up is not None else None
                if why is None and time.monotonic() >= deadline:
                    why = f"got no answer in {timeout:g}s"
                if why is not None:
                    with self._lock:
                        self._replies.pop(int(msg["id"]), None)
                    raise RemoteError(self.label, f"agent request {op!r}", None,
                                      why=why) from None
        if reply.get("error"):
            raise RemoteError(self.label, f"agent request {op!r}", None, str(reply["error"]))
        return reply

    def stop(self, timeout: float) -> None:
        self.send({"op": "stop"})
        deadline = time.monotonic() + timeout
        while not self.closed.is_set() and time.monotonic() < deadline:  # (an agent that never
            if self.bye.wait(0.05):  # started, or died, says no bye: waiting is for nothing)
                break
        try:
            self.chan.shutdown_write()
            self.chan.close()
        except Exception:  # noqa: BLE001,S110 - already gone
            pass
