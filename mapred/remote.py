"""Running on LAN hosts over SSH: :class:`SSHTransport`, the SSH implementation of ``Transport``.

One host, one paramiko connection (fabric ``Connection`` built from the resolved
:class:`~mapred.sshconfig.SSHTarget` only, host keys checked against its known_hosts files) carrying
many channels: the host agent (``python -m mapred.agent``: scratch dir, shuffle daemon,
cleanup), one channel per worker (``python -m mapred.worker``), relay port forwards. Bytes (shards,
part files) travel with rsync over OpenSSH, multiplexed over one OpenSSH master connection per host,
with the very same options (:func:`~mapred.sshconfig.ssh_command_args`).

* Connecting starts at construction, in the background: building the transports of a cluster
  connects to all its hosts in parallel; :func:`open_transports` waits for them and drops the
  unusable ones (host key refusals and authentication failures are fatal: exit 2).
* Shards are content-addressed: ``WORKDIR/cache/<sha256 of the shard's bytes>``, a multi-file shard
  as one concatenated file. A shard the host already has is not sent again. Transfers run on a small
  per-host thread pool, so shards of idle slots move while the other slots map.
* Shuffle ``direct``: each host's agent runs a per-job rsync daemon (random port, per-job secret,
  read only, on the address the laptop reaches the host by); reducers fetch from mapper hosts
  themselves (:mod:`mapred.fetch`). ``relay``: daemons listen on the host's loopback only and a
  reducer reaches them through an SSH remote port forward bridged by the laptop.
* Nothing of a run outlives it on a host: see :mod:`mapred.agent` for the agent's cleanup on stop,
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
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mapred import __version__, diagnose, jobfiles, paths
from mapred.agent import COMMAND as AGENT_COMMAND
from mapred.agentclient import AgentChannel
from mapred.agentfs import TOKEN_ENV
from mapred.errors import ConfigError, JobError, NoHostsError
from mapred.hosts import Host, resolve_ssh, rsync_remote, ssh_command_args
from mapred.modes import DIRECT, RELAY, SHUFFLE_MODES, UMASK_ENV, umask_env
from mapred.shards import Shard
from mapred.shuffle import ShuffleGroup, _bridge
from mapred.sshconfig import (
    DEFAULT_SSH_PORT,
)
from mapred.sshconnect import (
    REQUEST_TIMEOUT,
    DiskFull,
    HostUnusable,
    KeyLocked,
    RemoteError,
    _reason,
    connect,
)
from mapred.sshdefaults import (  # every default, re-exported: mapred.remote.X still works
    AGENT_START_TIMEOUT,
    ALLOW_TIMEOUT,
    DEAD_AFTER,
    FLAP_LIMIT,
    FLAP_SILENCE,
    FLAP_WINDOW,
    PRESPAWN,
    RSYNC_TIMEOUT,
    STDERR_TAIL,
    STOP_TIMEOUT,
    TRANSFER_THREADS,
    VERIFY_TIMEOUT,
    WATCH_SECONDS,
)
from mapred.sshworker import SSHWorker, _DeadWorker
from mapred.staging import check_unchanged, shard_digest, shard_pieces, stage_shard
from mapred.transport import OnMessage, Staged

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


# --- the transport ----------------------------------------------------------------------------


class SSHTransport:
    """One LAN host reached over SSH; implements ``mapred.transport.Transport``.

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

    def _ssh_args(self) -> list[str]:
        return ssh_command_args(self.target, accept_new_host_keys=self.accept_new)

    @property
    def _ctl_opt(self) -> str:
        return self._ctl.replace("%", "%%")

    def _mux_options(self) -> list[str]:
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={self._ctl_opt}"]

    def _rsh(self) -> str:
        return " ".join(shlex.quote(a) for a in ["ssh", *self._ssh_args(), *self._mux_options()])

    def _start_master(self) -> subprocess.Popen[bytes]:
        """The OpenSSH master rsync multiplexes over, tied to this process: a shell holds it
        and kills it when its stdin (our pipe) closes, so it cannot outlive us, even kill -9."""
        argv = [*self._ssh_args(), "-o", "ControlMaster=yes", "-o", f"ControlPath={self._ctl_opt}",
                "-o", "ControlPersist=no", "-N", self.target.hostname]
        script = 'ssh "$@" </dev/null & trap "kill $! 2>/dev/null" EXIT HUP TERM; read _'
        with open(self._tmp / "master.log", "wb") as err:
            return subprocess.Popen(["sh", "-c", script, "mapred-ssh-master", *argv],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err)

    def _wait_master(self) -> None:
        """Before the first rsync: the master is up (or failed, and rsync connects alone)."""
        with self._master_lock:
            if self._master is None or self._master_checked:
                return
            self._master_checked = True
            deadline = time.monotonic() + self.connect_timeout + 5
            while not os.path.exists(self._ctl) and time.monotonic() < deadline:
                time.sleep(0.01)
        if not os.path.exists(self._ctl):  # not fatal: rsync then connects on its own
            why = (self._tmp / "master.log").read_text(errors="replace").strip()[-300:]
            log.warning("host %s: no shared OpenSSH connection for rsync (%s)", self.name,
                        why or "not up in time")

    def _stop_master(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            assert master.stdin is not None
            master.stdin.close()
            master.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            master.kill()

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

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def agent_request(self, op: str, *, wait: bool = False,
                      **fields: Any) -> dict[str, Any]:
        """A request to the host's agent; with ``wait``, its reply (raises when the host is
        lost or the reply does not come in time), else nothing (dropped if the host is lost)."""
        if self._agent is None or self._lost is not None:
            if wait:
                raise HostUnusable(self._lost or f"host {self.name}: no agent")
            return {}
        return self._agent.request(op, wait=wait, **fields)

    def probe(self, timeout: float = DEAD_AFTER + 2) -> bool:
        """Whether the host's agent answers a ping within ``timeout``."""
        try:
            self.agent_request("ping", wait=True, timeout=timeout)
        except (JobError, NoHostsError):
            return False
        return True

    def checksums(self, remote_paths: list[str]) -> dict[str, tuple[int, str]]:
        """(size, sha256) of map outputs on the host; reducers check their inputs against them."""
        if not remote_paths:
            return {}
        reply = self.agent_request("sums", wait=True, timeout=VERIFY_TIMEOUT,
                                   paths=list(remote_paths))
        sums = {str(p): (int(v[0]), str(v[1])) for p, v in reply.get("sums", {}).items()}
        with self.group.lock:
            for p, v in sums.items():
                self.group.sums[(self.name, p)] = v
        return sums

    def keep(self, remote_dirs: list[str]) -> None:
        """Committed map attempt dirs: kept for --resume should the coordinator vanish."""
        self.agent_request("keep", run=self.run_id, paths=list(remote_dirs))

    @property
    def kept_runs(self) -> list[str]:
        """Run ids whose map outputs this host kept (their coordinator vanished)."""
        return [str(r) for r in self._info.get("kept", [])]

    def adopt(self, run_id: str) -> tuple[str, dict[str, int]]:
        """Take over the kept map outputs of ``run_id``: (dir now holding that run's ``map``
        dir's contents, {path relative to it: size}); no files if none were kept."""
        reply = self.agent_request("adopt", wait=True, timeout=VERIFY_TIMEOUT, run=run_id)
        return str(reply.get("root", "")), {str(k): int(v) for k, v in
                                            reply.get("files", {}).items()}

    def forget_runs(self, run_ids: list[str]) -> None:
        """Remove the kept map outputs of these runs (nobody will resume them)."""
        if run_ids:
            self.agent_request("forget", runs=list(run_ids))

    def holds(self, digests: set[str]) -> set[str]:
        """Which of these shards the host's cache holds, as far as this run knows (the agent's
        listing at start, plus what was staged since): a hint for placing map tasks."""
        self._ready()
        return {d for d in digests if d in self._cached}  # (other threads add to _cached)

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

    def prepare(self, shard: Shard) -> Future[Staged]:
        if self._lost is None:
            try:
                return self._pool.submit(self._stage, shard)
            except RuntimeError:  # the pool was shut down: the host was just lost
                pass
        fut: Future[Staged] = Future()
        fut.set_exception(HostUnusable(self._lost or f"host {self.name} is closed"))
        return fut

    def _stage(self, shard: Shard) -> Staged:
        """Put the shard in the host's cache (sent, copied from a peer, or already there) and
        check it there once per run: a damaged copy is removed and sent again, once."""
        self._ready()
        digest = shard_digest(shard)
        remote = f"{self.workdir}/cache/{digest}"
        with self._lock:
            busy = self._busy.setdefault(digest, threading.Lock())
        how, sent, source = "cached", 0, None
        with busy:
            for attempt in range(2):  # the second time from this machine's original
                how, sent, source = "cached", 0, None
                if digest in self._cached:
                    self._count("shards_cached")
                    self.agent_request("touch", names=[digest])
                elif attempt or (source := self._pull_from_peer(digest)) is None:
                    how, sent = "sent", self._upload(shard, digest, remote)
                else:
                    how = "copied"
                self._cached.add(digest)
                if digest in self._verified:
                    break
                try:
                    self.agent_request("verify", wait=True, timeout=VERIFY_TIMEOUT, name=digest,
                                       size=shard.size)
                except RemoteError as e:
                    self._cached.discard(digest)
                    if attempt:
                        raise
                    log.warning("%s: sending it again", e)
                    if source is not None:  # its copy is likely damaged too: it checks it
                        source.agent_request("verify", name=digest, size=shard.size)
                        source._cached.discard(digest)
                    continue
                self._verified.add(digest)
                break
        return Staged(shard_pieces(shard, remote), how, sent, source.name if source else None)

    def _pull_from_peer(self, digest: str) -> SSHTransport | None:
        """Direct mode: copy a shard another host of the run has cached, host to host; the
        host it came from, or None."""
        if self.shuffle != DIRECT:
            return None
        for peer in self.group.holders(digest, exclude=self):
            daemon = peer._info.get("daemon")
            if not daemon:
                continue
            addr = f"[{daemon['address']}]" if ":" in daemon["address"] else daemon["address"]
            url = f"rsync://{daemon['user']}@{addr}:{daemon['port']}/cache/{digest}"
            def peer_lost(peer: SSHTransport = peer) -> str | None:
                return "gave up: the source host was lost" if peer._lost else None

            try:  # a frozen peer's daemon accepts and then says nothing: do not wait for rsync
                self.agent_request("pull", wait=True, timeout=RSYNC_TIMEOUT * 4, url=url,
                                   name=digest, host=peer.name, give_up=peer_lost)
            except RemoteError as e:
                if not self._closed:
                    log.info("host %s: copying shard %s from %s failed (%s): sending it",
                             self.name, digest[:12], peer.name, e)
                continue
            self._count("shards_pulled")
            return peer
        return None

    def _upload(self, shard: Shard, digest: str, remote: str) -> int:
        """Send the shard to the host's cache; the bytes rsync sent."""
        check_unchanged(shard)
        path, temporary = stage_shard(shard, self._tmp, digest)
        try:
            sent = self._rsync(["--ignore-existing", "--", path,
                                rsync_remote(self.target, remote)],
                               f"rsync of shard {digest[:12]} ({shard.describe()})")
        finally:
            if temporary:
                os.unlink(path)
        try:
            check_unchanged(shard)
        except JobError:
            self.agent_request("rm", paths=[remote])
            raise
        self._count("shards_sent")
        self._count("bytes_sent", sent)
        return sent

    def _rsync(self, args: list[str], what: str) -> int:
        """Run rsync over the host's OpenSSH connection; the bytes it sent."""
        if self._lost is not None:
            raise HostUnusable(self._lost)
        self._wait_master()
        argv = ["rsync", "-s", f"--timeout={RSYNC_TIMEOUT}", "--stats", "-e", self._rsh(), *args]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        with self._lock:
            self._procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode != 0:
            raise RemoteError(self.name, what, proc.returncode, err.decode("utf-8", "replace"))
        m = re.search(rb"Total bytes sent: ([\d,.]+)", out)
        return int(re.sub(rb"[,.]", b"", m[1])) if m else 0

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
                   f"exec {q(self.host.python)} -m mapred.worker")

        def open_chan() -> Any:
            chan = self._open_session()
            chan.exec_command(command)
            return chan

        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker = SSHWorker(f"{self.name}/{index}",
                           self.log_dir / f"worker-{self.name}-{index}.log", self, open_chan)
        self._workers.append(worker)
        return worker

    def _prespawn(self) -> None:
        """Start the first worker now: it imports numba and loads the engine kernels while the
        agent starts and the coordinator plans. The runner starts the others it wants (a tiny
        input needs one worker per host, not one per core)."""
        worker = self._launch_worker(0)
        worker.send({"op": "preload"})
        self._prespawned[0] = worker

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
