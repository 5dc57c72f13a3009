"""Running on LAN hosts over SSH: :class:`SSHTransport`, the SSH implementation of ``Transport``.

One host, one paramiko connection (fabric ``Connection`` built from the resolved
:class:`~mapred.cluster.ssh.config.SSHTarget` only, host keys checked against its known_hosts files) carrying
many channels: the host agent (``python -m mapred.worker.agent``: scratch dir, shuffle daemon,
cleanup), one channel per worker (``python -m mapred.worker.main``), relay port forwards. Bytes (shards,
part files) travel with rsync over OpenSSH, multiplexed over one OpenSSH master connection per host,
with the very same options (:func:`~mapred.cluster.ssh.config.ssh_command_args`).

* Connecting starts at construction, in the background: building the transports of a cluster
  connects to all its hosts in parallel; :func:`open_transports` waits for them and drops the
  unusable ones (host key refusals and authentication failures are fatal: exit 2).
* Shards are content-addressed: ``WORKDIR/cache/<sha256 of the shard's bytes>``, a multi-file shard
  as one concatenated file. A shard the host already has is not sent again. Transfers run on a small
  per-host thread pool, so shards of idle slots move while the other slots map.
* Shuffle ``direct``: each host's agent runs a per-job rsync daemon (random port, per-job secret,
  read only, on the address the laptop reaches the host by); reducers fetch from mapper hosts
  themselves (:mod:`mapred.worker.fetch`). ``relay``: daemons listen on the host's loopback only and a
  reducer reaches them through an SSH remote port forward bridged by the laptop.
* Nothing of a run outlives it on a host: see :mod:`mapred.worker.agent` for the agent's cleanup on stop,
  end of input or silence; worker channels end with the connection.
* A host is **lost** — once, for the rest of the run — when its agent stays silent for
  ``DEAD_AFTER`` seconds (a cut link, a frozen or overloaded host: paramiko alone would wait on a
  dead connection for ever) or its connection breaks (killed host, reset). Then the callbacks
  registered with :meth:`SSHTransport.watch` hear it first (before any of its workers' exits is
  delivered), every transfer to it is killed, its connections are closed (which unblocks anything
  still waiting on them) and nothing is sent to it again, even if it comes back.
* Bytes are checked: a shard is verified on the host (size, and its sha256 is its cache name) the
  first time a run uses it; map outputs are summed (size, sha256) when their attempt commits and
  the reducer checks every input against that before merging it.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mapred import __version__, jobfiles, paths
from mapred.cluster import diagnose
from mapred.cluster.hosts import Host, resolve_ssh, rsync_remote
from mapred.cluster.ssh.agentclient import AgentChannel
from mapred.cluster.ssh.agentrequests import AgentRequestsMixin
from mapred.cluster.ssh.config import (
    DEFAULT_SSH_PORT,
)
from mapred.cluster.ssh.connect import (
    REQUEST_TIMEOUT,
    DiskFull,
    HostUnusable,
    KeyLocked,
    RemoteError,
    _reason,
    connect,
)
from mapred.cluster.ssh.liveness import LivenessMixin
from mapred.cluster.ssh.master import MasterMixin
from mapred.cluster.ssh.relay import RelayMixin
from mapred.cluster.ssh.shuffle import ShuffleGroup
from mapred.cluster.ssh.staging import StagingMixin
from mapred.cluster.ssh.worker import SSHWorker
from mapred.cluster.ssh.workers import WorkersMixin
from mapred.errors import ConfigError, JobError, NoHostsError
from mapred.limits import (  # the transport's defaults, re-exported: remote.X still works
    AGENT_START_TIMEOUT,
    ALLOW_TIMEOUT,
    DEAD_AFTER,
    FLAP_LIMIT,
    FLAP_SILENCE,
    FLAP_WINDOW,
    RSYNC_TIMEOUT,
    STDERR_TAIL,
    STOP_TIMEOUT,
    TRANSFER_THREADS,
    VERIFY_TIMEOUT,
    WATCH_SECONDS,
)
from mapred.modes import DIRECT, SHUFFLE_MODES, umask_env
from mapred.worker.agent import COMMAND as AGENT_COMMAND

__all__ = [
    "AgentChannel",
    "SSHTransport",
    "SSHWorker",
    "ShuffleGroup",
    "open_transports",
    "AGENT_START_TIMEOUT",
    "ALLOW_TIMEOUT",
    "DEAD_AFTER",
    "FLAP_LIMIT",
    "FLAP_SILENCE",
    "FLAP_WINDOW",
    "PRESPAWN",
    "RSYNC_TIMEOUT",
    "STDERR_TAIL",
    "STOP_TIMEOUT",
    "TRANSFER_THREADS",
    "VERIFY_TIMEOUT",
    "WATCH_SECONDS",
]

log = logging.getLogger("mapred")
PRESPAWN = True  # start a worker (and its numba import) as soon as the host is connected


# --- the transport ----------------------------------------------------------------------------


class SSHTransport(MasterMixin, LivenessMixin, AgentRequestsMixin, StagingMixin, RelayMixin, WorkersMixin):
    """One LAN host reached over SSH; implements ``mapred.cluster.transport.Transport``.

    Construction resolves the host through ``~/.ssh/config`` (or ``ssh_config``) and starts
    connecting in the background; ``cores``, ``start`` and every other method wait for that.
    ``run_state_dir`` is the coordinator's state directory (worker logs go to its ``logs/``).
    """

    workers_enter_scratch = True  # relative writes of user code land in the run's scratch dir

    def __init__(self, host: Host, *, run_state_dir: Path, accept_new_host_keys: bool = False,
                 shuffle: str = DIRECT, group: ShuffleGroup | None = None,
                 ssh_config: Path | None = None, transfer_threads: int = TRANSFER_THREADS,
                 connect_timeout: float | None = None, prespawn: bool = PRESPAWN) -> None:
        if host.local:
            raise ValueError(f"host {host.name!r} is local: use LocalTransport")
        if shuffle not in SHUFFLE_MODES:
            raise ConfigError(f"shuffle must be 'direct' or 'relay', not {shuffle!r}")
        self.host, self.name, self.memory = host, host.name, host.memory
        self.target = resolve_ssh(host, ssh_config)
        self.accept_new, self.shuffle = accept_new_host_keys, shuffle
        self.connect_timeout = connect_timeout or self.target.connect_timeout  # hosts.toml's
        self.prespawn = prespawn
        self.log_dir = Path(run_state_dir) / "logs"
        self.group = group or ShuffleGroup()
        self.group.join(self)
        self.token = secrets.token_urlsafe(12)
        self.umask = umask_env()
        self.stats = {"shards_sent": 0, "shards_cached": 0, "shards_pulled": 0, "bytes_sent": 0,
                      "collected": 0}
        self.run_id = ""
        self._conns: list[Any] = []
        self._agent: AgentChannel | None = None
        self._info: dict[str, Any] = {}
        self._workers: list[SSHWorker] = []
        self._prespawned: dict[int, SSHWorker] = {}
        self._master: subprocess.Popen[bytes] | None = None
        self._master_lock = threading.Lock()
        self._master_checked = False
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._cached: set[str] = set()
        self._jobs: set[str] = set()
        self._job_paths: dict[str, str] = {}  # job digest -> the job module's path there
        self._busy: dict[str, threading.Lock] = {}
        self._relays: dict[str, int] = {}
        self._relay_peer: dict[int, SSHTransport] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._lost: str | None = None
        self._lost_lock = threading.Lock()
        self._on_lost: list[Callable[[str, str], None]] = []
        self._on_flap: list[Callable[[str, str], None]] = []
        self._verified: set[str] = set()  # shards checked on the host during this run
        _sweep_local_tmp()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))  # socket, stage
        atexit.register(self.close)  # a run that failed before it started still cleans up
        self._ctl = str(self._tmp / "ctl")
        self._pool = ThreadPoolExecutor(max(1, transfer_threads),
                                        thread_name_prefix=f"mapred-{self.name}")
        self._setup: Future[None] = Future()
        threading.Thread(target=self._open, daemon=True, name=f"connect-{self.name}").start()

    # --- setup --------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            if not self.accept_new:  # (accept-new: paramiko records the key first)
                self._master = self._start_master()
            conn = connect(self.target, self.name, accept_new=self.accept_new,
                           timeout=self.connect_timeout)
            self._conns.append(conn)
            if self._master is None:
                self._master = self._start_master()
            if self.prespawn:  # its numba import overlaps the agent's start and the planning
                self._prespawn()
            self._agent = self._start_agent()
            try:
                info = self._agent.started.result(timeout=AGENT_START_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - explained below
                raise self._agent_failed(e) from None
            self._check(info)
            self._info = info
            self._cached = set(info.get("cache", []))
            self._jobs = set(info.get("jobs", []))
            if self.shuffle == DIRECT:
                self.group.admit(self)
            threading.Thread(target=self._watch, daemon=True, name=f"watch-{self.name}").start()
            self._setup.set_result(None)
        except BaseException as e:  # noqa: BLE001 - raised again by every waiting method
            self._setup.set_exception(e)

    def _agent_failed(self, e: Exception) -> HostUnusable:
        """Why the agent did not start, in one line: no such python, a full disk, or else."""
        if isinstance(e, RemoteError):
            missing = diagnose.missing_python(self.name, self.host.python, e.status, e.stderr)
            if missing is not None:
                return HostUnusable(missing)
            if diagnose.disk_full(e.stderr):
                return DiskFull(self.name, self.host.workdir)
        assert self._agent is not None
        return HostUnusable(
            f"host {self.name}: cannot start {self._agent.command!r}: {e}. Is mapred "
            f"{__version__} installed for that python? `mapred hosts check` tells, "
            "`mapred hosts setup` installs it")

    def _check(self, info: dict[str, Any]) -> None:
        python = self.host.python
        if info.get("mapred") != __version__:
            raise HostUnusable(
                f"host {self.name}: mapred {info.get('mapred')} is installed for {python} there, "
                f"{__version__} here: the versions must match (`mapred hosts setup` installs it)")
        there, here = tuple(info.get("python", ())), tuple(sys.version_info[:3])
        if there[:2] != here[:2]:
            raise HostUnusable(
                f"host {self.name}: {python} is Python {'.'.join(map(str, there))}, this machine "
                f"runs {'.'.join(map(str, here))}: major.minor must match")
        if not info.get("rsync"):
            raise HostUnusable(f"host {self.name}: rsync is not installed there")

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until connected and set up; raise why not (HostKeyError, HostUnusable...)."""
        self._setup.result(timeout=timeout)

    def _ready(self) -> None:
        self._setup.result()
        if self._lost is not None:
            raise HostUnusable(self._lost)

    def _open_session(self) -> Any:
        """A new channel, on a further connection if sshd's MaxSessions is reached."""
        import paramiko

        for conn in list(self._conns):
            try:
                return conn.transport.open_session(timeout=REQUEST_TIMEOUT)
            except paramiko.ChannelException:
                continue
            except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
                raise HostUnusable(f"host {self.name}: cannot open a channel: {_reason(e)}") \
                    from None
        conn = connect(self.target, self.name, accept_new=self.accept_new,
                       timeout=self.connect_timeout)
        self._conns.append(conn)
        return conn.transport.open_session(timeout=REQUEST_TIMEOUT)

    def _start_agent(self) -> AgentChannel:
        command = f"exec {shlex.quote(self.host.python)} {AGENT_COMMAND}"
        chan = self._open_session()
        chan.exec_command(command)
        agent = AgentChannel(chan, self.name, command)
        agent.send({"workdir": self.host.workdir, "token": self.token,
                    "secret": self.group.secret, "shuffle": self.shuffle})
        return agent

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    # --- Transport ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where the host is reached: its host name after ``~/.ssh/config``, and the port when
        it is not 22 (``[v6]:port``)."""
        host, port = self.target.hostname, self.target.port
        if port == DEFAULT_SSH_PORT:
            return host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def cores(self) -> int:
        if self.host.cores:
            return self.host.cores
        self._ready()
        return int(self._info["cores"])

    @property
    def scratch(self) -> str:
        self._ready()
        return str(self._info["scratch"])

    @property
    def workdir(self) -> str:
        self._ready()
        return str(self._info["workdir"])

    def start(self, run_id: str) -> None:
        self._ready()
        self.run_id = run_id
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def job_path(self, job: jobfiles.JobFiles) -> str:
        """Ship the job module and the modules it imports (``jobs/DIGEST/``, content-addressed
        by its manifest, so numba's cache stays valid across runs); the manifest goes last, so
        a directory the agent lists is whole."""
        self._ready()
        with self._lock:
            if job.digest in self._job_paths:
                return self._job_paths[job.digest]
        name = f"{job.digest}/{job.main}"
        if name not in self._jobs:
            for rel, _ in job.files:
                data = job.local_name(rel).read_bytes()
                self.agent_request("put", wait=True, path=f"jobs/{job.digest}/{rel}",
                                   data=base64.b64encode(data).decode())
            self.agent_request("put", wait=True, path=f"jobs/{job.digest}/{jobfiles.MANIFEST}",
                               data=base64.b64encode(job.manifest()).decode())
            self._jobs.add(name)
        remote = f"{self.workdir}/jobs/{name}"
        with self._lock:
            self._job_paths[job.digest] = remote
        return remote

    def reduce_output(self, staging: Path, partition: int, attempt: str) -> str:
        return f"{self.scratch}/out/{paths.reduce_tmp_name(partition, attempt)}"

    def collect(self, remote: str, target: Path) -> None:
        """rsync a part file from the host to ``target`` on this machine."""
        self._ready()
        dest = os.path.abspath(target)  # absolute: a ':' in it cannot look like host:path
        self._rsync(["--", rsync_remote(self.target, remote), dest],
                    f"rsync of {Path(remote).name} to this machine")
        self._count("collected")

    def remove(self, remote_paths: list[str]) -> None:
        if self._setup.done() and not self._setup.exception():
            self.agent_request("rm", paths=list(remote_paths))

    def close(self) -> None:
        """End the run on the host: workers, agent (which cleans up), connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._kill_procs()
        for w in self._workers:
            w.close()
        try:
            self._setup.result(timeout=self.connect_timeout + AGENT_START_TIMEOUT)
        except Exception:  # noqa: BLE001,S110 - nothing to stop then
            pass
        if self._agent is not None and self._lost is None:
            self._agent.stop(STOP_TIMEOUT)
        self._stop_master()
        for conn in self._conns:
            conn.close()
        self.group.leave(self)
        shutil.rmtree(self._tmp, ignore_errors=True)
        s = self.stats
        used = self._setup.done() and self._setup.exception() is None  # else: nothing to say
        log.log(logging.INFO if used else logging.DEBUG,
                "host %s: shards sent %d (%d bytes), already cached %d, copied from "
                "another host %d; part files collected %d", self.name, s["shards_sent"],
                 s["bytes_sent"], s["shards_cached"], s["shards_pulled"], s["collected"])


TMP_PREFIX = "mapred-ssh-"


def _sweep_local_tmp() -> None:
    """Remove this machine's transport temp dirs left by processes that died (kill -9)."""
    base = Path(tempfile.gettempdir())
    for d in base.glob(f"{TMP_PREFIX}*-*"):
        pid = d.name[len(TMP_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or d.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def open_transports(hosts: Iterable[Host], *, run_state_dir: Path, shuffle: str = DIRECT,
                    accept_new_host_keys: bool = False,
                    ssh_config: Path | None = None) -> list[SSHTransport]:
    """SSH transports for the remote ``hosts``, connected in parallel.

    Hosts that cannot be used (unreachable, wrong versions) are skipped with a warning;
    NoHostsError (exit 3) if none is left. A refused host key or a failed authentication is a
    ConfigError (exit 2) for the whole run: that is a configuration or security problem.
    """
    group = ShuffleGroup()
    made: list[SSHTransport] = []
    try:
        for h in hosts:
            made.append(SSHTransport(h, run_state_dir=run_state_dir, shuffle=shuffle,
                                     group=group, accept_new_host_keys=accept_new_host_keys,
                                     ssh_config=ssh_config))
    except BaseException:
        for t in made:
            t.close()
        raise
    usable, problems, fatal = [], [], []
    failed: list[Exception] = []
    for t in made:
        try:
            t.wait_ready()
            usable.append(t)
        except ConfigError as e:
            fatal.append(e)
        except Exception as e:  # noqa: BLE001 - reported below with the host's name
            problems.append(str(e))
            failed.append(e)
    if fatal or not usable:
        for t in made:
            t.close()
    if fatal:
        locked = {e.cause for e in fatal if isinstance(e, KeyLocked)}
        if len(locked) == 1 and len(fatal) > 1 and all(isinstance(e, KeyLocked) for e in fatal):
            names = ", ".join(e.host for e in fatal if isinstance(e, KeyLocked))
            raise ConfigError(f"hosts {names}: {locked.pop()}")  # one key, one line
        first = fatal[0]
        others = [str(e) for e in fatal[1:]] + problems
        raise type(first)(first.message, detail="\n".join(others) or None)
    if not usable and failed and all(isinstance(e, DiskFull) for e in failed):
        full = {e.host: e.workdir for e in failed if isinstance(e, DiskFull)}
        raise JobError(diagnose.disk_full_line(full, every=True))  # exit 1, as in the run
    if not usable:
        raise NoHostsError("no usable host: " + "; ".join(problems))
    for p in problems:
        log.warning("skipping %s", p)
    for t in made:
        if t not in usable:
            t.close()
    return usable
