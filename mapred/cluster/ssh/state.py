"""What an SSH transport holds, declared once for the mixins of
:class:`~mapred.cluster.ssh.remote.SSHTransport`."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mapred.cluster.hosts import Host
    from mapred.cluster.ssh.agentclient import AgentChannel
    from mapred.cluster.ssh.config import SSHTarget
    from mapred.cluster.ssh.remote import SSHTransport
    from mapred.cluster.ssh.shuffle import ShuffleGroup
    from mapred.cluster.ssh.worker import SSHWorker


class TransportState:
    """The attributes ``SSHTransport.__init__`` sets (annotations only: no behaviour here)."""

    host: Host
    name: str
    memory: int | None
    target: SSHTarget
    accept_new: bool
    shuffle: str
    connect_timeout: float
    prespawn: bool
    log_dir: Path
    group: ShuffleGroup
    token: str
    umask: str
    stats: dict[str, int]
    run_id: str
    _conns: list[Any]
    _agent: AgentChannel | None
    _info: dict[str, Any]
    _workers: list[SSHWorker]
    _prespawned: dict[int, SSHWorker]
    _master: subprocess.Popen[bytes] | None
    _master_lock: threading.Lock
    _master_checked: bool
    _procs: set[subprocess.Popen[bytes]]
    _cached: set[str]
    _jobs: set[str]
    _job_paths: dict[str, str]
    _busy: dict[str, threading.Lock]
    _relays: dict[str, int]
    _relay_peer: dict[int, SSHTransport]
    _lock: threading.Lock
    _closed: bool
    _lost: str | None
    _lost_lock: threading.Lock
    _on_lost: list[Callable[[str, str], None]]
    _on_flap: list[Callable[[str, str], None]]
    _verified: set[str]
    _tmp: Path
    _ctl: str
    _pool: ThreadPoolExecutor
    _setup: Future[None]
    # methods of SSHTransport or of another mixin that a mixin calls
    _ready: Callable[[], None]
    _open_session: Callable[[], Any]
    _count: Callable[..., None]
    agent_request: Callable[..., Any]
    _wait_master: Callable[[], None]
    _rsh: Callable[[], str]

    @property
    def workdir(self) -> str:
        raise NotImplementedError  # SSHTransport's
