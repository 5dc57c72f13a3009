"""Starting workers on an SSH host: prespawned, launched, or dead at once."""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING, Any, cast

from mapred.cluster.ssh.state import TransportState
from mapred.cluster.ssh.worker import SSHWorker, _DeadWorker
from mapred.cluster.transport import OnMessage
from mapred.modes import UMASK_ENV
from mapred.worker.agentfs import TOKEN_ENV

if TYPE_CHECKING:
    from mapred.cluster.ssh.remote import SSHTransport

log = logging.getLogger("mapred")


class WorkersMixin(TransportState):
    """Starting workers on an SSH host: prespawned, launched, or dead at once."""

    def spawn_worker(self, index: int, on_message: OnMessage) -> Any:
        """A worker in slot ``index``; never blocks (the channel opens in the background)."""
        self._setup.result()
        slot = f"{self.name}/{index}"
        if self._lost is not None:
            return _DeadWorker(slot, self._lost, on_message)
        with self._lock:
            worker = self._prespawned.pop(index, None)
        if worker is None or worker.ended.is_set():
            worker = self._launch_worker(index)
        worker.attach(on_message)
        return worker

    def _launch_worker(self, index: int) -> SSHWorker:
        q = shlex.quote  # the worker enters the run's scratch dir when its init comes
        command = (f"{TOKEN_ENV}={q(self.token)} {UMASK_ENV}={q(self.umask)} "
                   f"exec {q(self.host.python)} -m mapred.worker.main")

        def open_chan() -> Any:
            chan = self._open_session()
            chan.exec_command(command)
            return chan

        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{self.name}-{index}.log"
        worker = SSHWorker(f"{self.name}/{index}", log_path, cast("SSHTransport", self), open_chan)
        self._workers.append(worker)
        return worker

    def _prespawn(self) -> None:
        """Start the first worker now: it imports numba and loads the engine kernels while the
        agent starts and the coordinator plans. The runner starts the others it wants (a tiny
        input needs one worker per host, not one per core)."""
        worker = self._launch_worker(0)
        worker.send({"op": "preload"})
        self._prespawned[0] = worker
