"""Drives one run: plan, start workers through transports, feed the scheduler, commit output.

The runner is the only place that turns scheduler instructions into I/O. Worker messages arrive
on one queue (each worker has a reader thread); the main thread handles them in order, so the
scheduler needs no locks. Whatever happens, ``Runner.execute`` kills every worker, removes
scratch and staging directories, and closes the journal before it returns or raises.

Faults. Slow or blocking I/O (staging a shard, checking a map attempt's outputs, collecting a part
file, probing a host) runs on other threads, which post their outcome to the same queue, so the
loop never waits on a host. A transport that loses a host (``watch``) posts one ``host_lost``:
the host's workers are fenced (their generation moves on) and never respawned, its open attempts
end as ``lost`` (not failures), and the scheduler gets one ``HostLost``. A worker that keeps
dying, or a host that cannot start one, is given up the same way. A reduce attempt that failed
to fetch from a host waits for that host to answer a ping before it counts as a failure: if the
host is lost meanwhile, the failure is the host's, not the task's. Counters and per-host figures
are tallied from the attempts finally committed, so work redone after a loss is counted once.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapred import job as jobmod
from mapred import jobfiles, paths, warmup
from mapred.cluster.transport import Transport
from mapred.engine import logs, output, resume, scheduler
from mapred.engine.accounting import Accounts, user_counters
from mapred.engine.attempts import AttemptIO, shard_info
from mapred.engine.collect import PartFiles
from mapred.engine.journal import Ending, Journal, new_run_id, write_plan, write_summary
from mapred.engine.locality import DigestHints
from mapred.engine.loop import EventLoop, Hosts
from mapred.engine.pool import HEARTBEAT_TIMEOUT, INTERNAL, MAX_RESPAWNS, Message, WorkerPool
from mapred.errors import Interrupted, MapredError, NoHostsError
from mapred.limits import DEFAULT_SHARD_LIMIT, TICK_SECONDS
from mapred.shards import Shard, auto_shard_size, list_inputs, plan
from mapred.words import plural

__all__ = ["DEFAULT_SEED", "DEFAULT_SHARD_LIMIT", "HEARTBEAT_TIMEOUT", "MAX_RESPAWNS", "Progress",
           "RunConfig", "Runner", "Summary", "default_reducers", "new_run_id", "user_counters",
           "workers_wanted"]

log = logging.getLogger("mapred")

DEFAULT_SEED = 0x6D617072  # "mapr"
IO_THREADS = 8  # staging callbacks aside: output checks, collects, probes


@dataclass(frozen=True)
class RunConfig:
    job: Path
    corpus: Path
    output: Path
    state: Path
    params: dict[str, str] = field(default_factory=dict)
    reducers: int | None = None
    shard_size: int = 0  # 0: automatic (about three shards per slot, at most 64 MiB)
    overwrite: bool = False
    max_attempts: int = 4
    seed: int = DEFAULT_SEED
    deadline: float | None = None  # seconds
    speculation: bool = True
    resume: bool = False
    argv: tuple[str, ...] = ()
    hosts_file: Path | None = None  # only to refuse an output that contains it
    follow_symlinks: bool = False  # read what links outside the corpus point to


@dataclass
class Summary:
    run_id: str
    output: Path
    seconds: float
    counters: dict[str, int]
    hosts: dict[str, dict[str, float]]
    shards: int
    reducers: int


class Progress:
    """What the runner reports as it goes; the CLI supplies a tqdm bar or log lines.

    Bytes are input bytes as planned (on disk, compressed for gzip files): ``advance`` never
    counts a shard's bytes twice (retries and backups), and a committed shard counts whole."""

    def start(self, total_bytes: int, shards: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def shard_done(self) -> None: ...
    def reduce_start(self, partitions: int) -> None: ...
    def partition_done(self) -> None: ...
    def phase(self, name: str) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...


class Runner:
    def __init__(self, cfg: RunConfig, transports: list[Transport],
                 progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.transports = {t.name: t for t in transports}
        self.progress = progress or Progress()
        self.run_id = new_run_id()
        self.events: queue.Queue[Message] = queue.Queue()
        self.pool = WorkerPool(self.transports, self.events, self._on_host_lost)
        self.pool.host_out = self._host_out
        self.pool.init_for = self._init_for
        self.accounts = Accounts(self.progress)
        self.aio: AttemptIO | None = None  # once the run starts
        self.reducers = 1
        self.journal: Journal | None = None
        self.summary_data: dict[str, Any] | None = None
        self.sched: scheduler.Scheduler | None = None
        self.fingerprint: dict[str, Any] = {}
        self.previous: resume.Previous | None = None
        self.resumed_from: str | None = None
        self.superseded: Path | None = None  # an unfinished earlier run on this output
        self.deadline_at: float | None = None
        self._closed = False
        self.staging: Path | None = None
        self.out_lock: output.OutputLock | None = None
        self.shards: dict[str, Shard] = {}
        self.hints: DigestHints | None = None  # where shards are cached (SSH hosts)
        self.lost_hosts: dict[str, str] = {}  # host -> why it was lost
        self.flapping_kept: set[str] = set()  # flapping, but the last usable host
        self.disk_full: dict[str, str] = {}  # host -> its workdir, where a disk filled up
        self.total_slots = 1  # cores of all hosts, known once planned
        self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="mapred-io")
        self.sample: dict[str, Any] | None = None  # the corpus's first records, for warm-ups
        self.job_files: jobfiles.JobFiles | None = None  # the job module and its modules
        self.job_warnings: set[str] = set()  # shown once, not once per worker
        self.last_tick = 0.0

    # --- the whole run ----------------------------------------------------------------------

    def execute(self) -> Summary:
        """Run the job; whatever happens, workers, scratch and staging are gone on return."""
        started = time.monotonic()
        if self.cfg.deadline is not None:
            self.deadline_at = started + self.cfg.deadline
        logs.context["run_id"] = self.run_id
        try:
            with output.OutputLock(self.cfg.state, self.cfg.output) as self.out_lock, \
                    _signals_raise():
                shards, reducers = self._plan()
                seconds = self._journaled(shards, reducers, started)
        finally:
            self._shutdown()  # also when planning failed: SSH transports connect early
        return Summary(self.run_id, self.cfg.output, seconds, self.accounts.counters,
                       self.accounts.host_stats, len(shards), reducers)

    def _plan(self) -> tuple[list[Shard], int]:
        """Check the output and the job, cut the corpus; under the lock, so a run that just
        finished cannot be overwritten by accident."""
        cfg = self.cfg
        output.check_output(cfg.output, cfg.corpus, cfg.overwrite,
                            output.guarded_paths(cfg.state, cfg.job, cfg.hosts_file))
        jobmod.check_syntax(cfg.job)
        self.job_files = jobfiles.find(cfg.job)
        files = list_inputs(cfg.corpus, cfg.follow_symlinks, cfg.output)
        self.total_slots = slots = sum(t.cores for t in self.transports.values())
        found = resume.find_previous(cfg.state, cfg.output)
        shard_size = cfg.shard_size or auto_shard_size(sum(f.size for f in files), slots,
                                                       DEFAULT_SHARD_LIMIT)
        reducers = cfg.reducers
        if cfg.resume and found is not None:  # same cuts and reducers as the earlier run
            old = found[1].get("fingerprint") or {}
            shard_size = cfg.shard_size or old.get("shard_size") or shard_size
            reducers = reducers or old.get("reducers")
        shards = plan(files, shard_size)
        reducers = reducers or default_reducers(slots, len(shards))
        self.shards = self.accounts.shards = {s.task: s for s in shards}
        self.sample = warmup.corpus_head(shards)
        self.fingerprint = resume.job_fingerprint(self.job_files, cfg.params, reducers,
                                                  cfg.seed, shard_size)
        if cfg.resume:
            self.previous = resume.load(cfg.state, cfg.output, self.fingerprint)
            self.resumed_from = self.previous.run_id if self.previous else None
        self.superseded = found[0] if found is not None else None
        return shards, reducers

    def _journaled(self, shards: list[Shard], reducers: int, started: float) -> float:
        """Run with a journal; the summary is written however the run ends."""
        self.journal = self.pool.journal = Journal(self.cfg.state, self.run_id)
        self._write_plan(shards, reducers)
        log.debug("run %s: %d shards, %d reducers", self.run_id, len(shards), reducers,
                  extra={"event": "run_started", "fields": {
                      "job": str(self.cfg.job), "corpus": str(self.cfg.corpus),
                      "shards": len(shards), "reducers": reducers}})
        status, code, error, detail = "failed", 1, None, None
        try:
            self._run(shards, reducers)
            status, code = "succeeded", 0
        except Interrupted as e:
            status, code, error = "interrupted", e.exit_code, str(e)
            raise
        except KeyboardInterrupt:
            status, code, error = "interrupted", 130, "interrupted"
            raise Interrupted(2) from None
        except Exception as e:
            code, error, detail = getattr(e, "exit_code", 1), str(e), getattr(e, "detail", None)
            raise
        finally:
            self._shutdown()
            output.abandon(self.staging)
            seconds = time.monotonic() - started
            self._write_summary(Ending(status, code, error, detail, seconds), len(shards),
                                reducers)
            if self.hints is not None:
                self.hints.save(shards)
            self.journal.event("run_end", status=status, exit_code=code)
            self.journal.close()
        return seconds

    def _run(self, shards: list[Shard], reducers: int) -> None:
        assert self.journal is not None and self.out_lock is not None
        cfg = self.cfg
        self.staging = self.out_lock.stage(self.run_id)
        aio = self.aio = AttemptIO(self.transports, self.pool, self.journal, self.accounts,
                                   self.shards, self.io, self._post)
        aio.staging, aio.lost_hosts = self.staging, self.lost_hosts
        aio.parts = PartFiles(self.staging, self.io, self._post)
        self.journal.event("run_start")
        self.progress.start(sum(s.size for s in shards), len(shards))
        policy = scheduler.Policy(max_attempts=cfg.max_attempts, speculation=cfg.speculation,
                                  deadline_at=self.deadline_at)
        sched = scheduler.Scheduler([s.task for s in shards], reducers,
                                    hosts=list(self.transports), policy=policy)
        self.sched = sched
        self.reducers = reducers
        self._start_hosts(max(len(shards), reducers))
        resume.forget_abandoned(cfg.state, self.previous, self.transports, self.lost_hosts)
        self._preload(sched)
        self.hints = DigestHints(paths.digest_hints(cfg.state))
        loop = self._event_loop(sched)
        for host, tasks in self.hints.held(shards, self.transports.values()).items():
            loop.feed(scheduler.InputsCached(host, tasks))
        self.journal.event("phase", phase="map")
        loop.run()
        self.journal.event("phase", phase="commit")
        self.progress.phase("commit")
        aio.parts.settle()
        output.commit(self.staging, cfg.output, self.run_id, cfg.overwrite)
        self.staging = None
        resume.forget_superseded(self.superseded, self.transports, self.lost_hosts)
        self.accounts.report_faults(sched.stats(), self.lost_hosts)

    def _start_hosts(self, tasks: int) -> None:
        """Watch every host, make its scratch dir, start its share of workers."""
        assert self.journal is not None
        for t in self.transports.values():
            t.watch(self._on_host_lost, self._on_host_flapping)
            try:
                t.start(self.run_id)
                self.journal.event("host_scratch", host=t.name, path=t.scratch)
                cores = t.cores
            except NoHostsError as e:  # lost between connecting and now
                self._on_host_lost(t.name, str(e))
                continue
            for i in range(workers_wanted(cores, self.total_slots, tasks)):
                self.pool.spawn(t, i)

    def _preload(self, sched: scheduler.Scheduler) -> None:
        """--resume: mark the earlier run's reusable map tasks committed."""
        if self.previous is None:
            return
        reusable = dict(self.previous.reusable)  # local hosts: their files checked in place
        # SSH hosts: kept outputs taken over
        reusable.update(resume.adopt_kept(self.previous, self.transports, self.lost_hosts))
        reused = 0
        for shard in self.shards.values():
            found = reusable.get(resume.shard_key(shard))
            if found is not None and found[0] in self.transports:
                sched.handle(scheduler.Preloaded(shard.task, found[0], found[1]),
                             time.monotonic())
                self.accounts.shard_committed(shard.task)
                reused += 1
        self.accounts.map_reused = reused
        log.info("resuming run %s: %d of %s reused", self.previous.run_id, reused,
                 plural(len(self.shards), "map task"), extra={"event": "resume", "fields": {
                     "resumed_from": self.previous.run_id, "reused": reused}})

    def _init_for(self, t: Transport) -> dict[str, Any]:
        """The init message of a new worker on ``t``."""
        assert self.job_files is not None  # planned
        cfg = self.cfg
        return {"op": "init", "job": t.job_path(self.job_files), "params": cfg.params,
                "job_helpers": self.job_files.helpers(),
                "reducers": self.reducers, "seed": cfg.seed, "scratch": t.scratch,
                "slots": t.cores, "memory": _per_worker(t.memory, t.cores),
                "enter_scratch": t.workers_enter_scratch,
                "job_sha256": self.fingerprint.get("job_sha256"), "sample": self.sample}

    def _host_out(self, host: str) -> bool:
        """Whether no worker may start on ``host`` any more (lost or excluded)."""
        return host in self.lost_hosts or (self.sched is not None and
                                           host in self.sched.excluded)

    def _on_host_lost(self, host: str, reason: str) -> None:
        """Any thread: ``host`` is gone for this run (posted; handled by the loop)."""
        self.events.put((host, INTERNAL, {"ev": "host_lost", "reason": reason}))

    def _on_host_flapping(self, host: str, reason: str) -> None:
        """Any thread: ``host`` keeps dropping out (posted; handled by the loop)."""
        self.events.put((host, INTERNAL, {"ev": "host_flapping", "reason": reason}))

    def _post(self, attempt: str, msg: dict[str, Any]) -> None:
        """Any thread: the outcome of background work for ``attempt``."""
        self.events.put((attempt, INTERNAL, msg))

    # --- the event loop ---------------------------------------------------------------------

    def _event_loop(self, sched: scheduler.Scheduler) -> EventLoop:
        assert self.aio is not None and self.journal is not None
        hosts = Hosts(self.transports, self.lost_hosts, self.disk_full, _disk_of)
        loop = EventLoop(sched, hosts, self.pool, self.aio, self.accounts, self.journal,
                         self.progress, self.events, self.io)
        loop.reducers, loop.job_files, loop.tick_seconds = (self.reducers, self.job_files,
                                                            TICK_SECONDS)
        loop.deadline = self.cfg.deadline or 0.0
        return loop

    # --- shutdown and journal ---------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.shutdown()
        self.io.shutdown(wait=False, cancel_futures=True)
        # in parallel: a host that stopped answering costs its own timeout once, not per host
        closers = ThreadPoolExecutor(max(1, len(self.transports)),
                                     thread_name_prefix="mapred-close")
        for f in [closers.submit(t.close) for t in self.transports.values()]:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing a transport: %s", e)
        closers.shutdown(wait=False)
        self.progress.close()

    def _write_plan(self, shards: list[Shard], reducers: int) -> None:
        assert self.journal is not None
        write_plan(self.journal, self.run_id, self.cfg, reducers, self.fingerprint,
                   self.resumed_from,
                   [{"name": t.name, "address": t.address, "cores": t.cores}
                    for t in self.transports.values()],
                   [{"task": s.task, **shard_info(s), "key": resume.shard_key(s)}
                    for s in shards])

    def _write_summary(self, end: Ending, nshards: int, reducers: int) -> None:
        assert self.journal is not None
        stats = self.sched.stats() if self.sched is not None else scheduler.Stats()
        self.accounts.tally(stats)
        counters = self.accounts.summary_counters(stats, nshards, reducers, len(self.lost_hosts))
        self.summary_data = write_summary(self.journal, self.run_id, self.cfg, end, counters,
                                          self.accounts.host_stats, self.lost_hosts)


def default_reducers(slots: int, shards: int) -> int:
    """One reducer per core of the run, but not more than there are map shards: a tiny input
    gets one part file (and one reduce), a large one every core reducing."""
    return max(1, min(slots, shards))


def workers_wanted(cores: int, slots: int, tasks: int) -> int:
    """Workers to start on a host with ``cores`` of the run's ``slots`` cores when at most
    ``tasks`` tasks run at once: its share of them, at least one (a host lost then leaves the
    others working), at most one per core. Starting numba in idle workers costs real CPU time."""
    share = -(-tasks * cores // max(1, slots))
    return max(1, min(cores, share))


def _disk_of(t: Transport) -> str:
    """Where a transport's host writes: its workdir (SSH), else its scratch dir."""
    try:
        return str(getattr(t, "workdir", None) or t.scratch)
    except MapredError:  # lost meanwhile
        return "its workdir"


def _per_worker(memory: int | None, cores: int) -> int | None:
    """A host's memory budget (hosts.toml ``memory``) split among its workers."""
    return None if memory is None else max(1 << 20, memory // max(1, cores))


class _signals_raise:
    """SIGTERM and SIGHUP (the terminal closed) raise Interrupted(N) in the main thread, so the
    run cleans up as for Ctrl-C (SIGINT raises KeyboardInterrupt). An ignored SIGHUP (``nohup``)
    stays ignored."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> _signals_raise:
        self._old = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s, old in self._old.items():
            if not (s == signal.SIGHUP and old == signal.SIG_IGN):
                signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
