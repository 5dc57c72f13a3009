"""Workers on an SSH host: a ``python -m mapred.worker.main`` per channel, or one that cannot start."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapred.cluster.ssh.connect import _reason
from mapred.cluster.transport import Delivery, OnMessage
from mapred.limits import STDERR_TAIL

if TYPE_CHECKING:
    from mapred.cluster.ssh.remote import SSHTransport

log = logging.getLogger("mapred")


class SSHWorker:
    """A ``python -m mapred.worker.main`` on a host: JSON lines over one SSH channel.

    The channel is opened on a thread of its own (``open_chan``), so starting a worker never
    blocks the coordinator, even on a host that stopped answering; what is sent before the channel
    is open waits for it. When the channel ends because the host's connection died, the host is
    declared lost before this worker's exit is delivered.
    """

    def __init__(self, slot: str, log_path: Path, owner: SSHTransport,
                 open_chan: Callable[[], Any]) -> None:
        self.slot, self.owner = slot, owner
        self.chan: Any = None
        self.pid: int | None = None
        self.ended = threading.Event()
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._deliver = Delivery(slot)
        self.attach = self._deliver.attach
        self._unsent: list[bytes] | None = []  # until the channel is open
        self._closing = False
        self.log = log_path  # the worker's stderr and print() output, copied here
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed when the channel ends
        self._stderr_done = threading.Event()
        threading.Thread(target=self._start, args=(open_chan,), daemon=True,
                         name=f"worker-{slot}").start()

    def _start(self, open_chan: Callable[[], Any]) -> None:
        try:
            chan = open_chan()
        except Exception as e:  # noqa: BLE001 - reported as the worker's exit
            self.note(f"cannot start the worker: {_reason(e)}\n".encode())
            self._stderr_done.set()
            self._finish()
            return
        with self._lock:
            self.chan = chan
            unsent, self._unsent = self._unsent or [], None
            try:
                for data in unsent:
                    chan.sendall(data)
            except Exception:  # noqa: BLE001,S110 - the exit is reported by _pump
                pass
        if self._closing:
            self.close()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._pump()

    def _pump(self) -> None:
        try:
            for line in self.chan.makefile("rb"):
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("ev") == "ready":
                    self.pid = msg.get("pid")
                self._deliver(msg)
        except Exception:  # noqa: BLE001,S110 - the channel died: reported as an exit
            pass
        self._stderr_done.wait(2.0)
        self._finish()

    def _finish(self) -> None:
        self.owner._check_connection(self.chan)  # a dead connection: the host is lost first
        self._log.close()
        self.ended.set()
        self._deliver(None)

    def _read_stderr(self) -> None:
        try:
            for chunk in iter(lambda: self.chan.recv_stderr(4096), b""):
                self.note(chunk)
        except Exception:  # noqa: BLE001,S110 - ends with the channel
            pass
        self._stderr_done.set()

    def note(self, data: bytes) -> None:
        """Add to the stderr record (the log file and the tail shown in errors)."""
        self._tail += data
        del self._tail[:-STDERR_TAIL]
        try:
            self._log.write(data)
            self._log.flush()
        except (OSError, ValueError):
            pass

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            if self._unsent is not None:
                self._unsent.append(data)
                return
            try:
                self.chan.sendall(data)
            except Exception:  # noqa: BLE001,S110 - the exit is reported by _pump
                pass

    def kill(self) -> None:
        if self.pid is not None:
            self.owner.agent_request("kill", pids=[self.pid])
        self.close()

    def close(self) -> None:
        """End the worker's stdin (it exits and cleans up) and the channel."""
        with self._lock:
            self._closing = True
            chan = self.chan
        if chan is None:
            return  # closed as soon as it opens
        try:
            chan.shutdown_write()
            chan.close()
        except Exception:  # noqa: BLE001,S110 - already closed
            pass

    def stderr_tail(self, lines: int = 20) -> str:
        text = self._tail.decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])


class _DeadWorker:
    """Stands for a worker that cannot start because its host is lost: it exits at once."""

    def __init__(self, slot: str, reason: str, on_message: OnMessage) -> None:
        self.slot, self.reason = slot, reason
        timer = threading.Timer(0.1, on_message, args=(slot, None))
        timer.daemon = True
        timer.start()

    def send(self, msg: dict[str, Any]) -> None:
        pass

    def kill(self) -> None:
        pass

    def stderr_tail(self, lines: int = 20) -> str:
        return self.reason
