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

import functools
import json
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapred import diagnose, jobfiles, logs, output, paths, resume, scheduler, warmup
from mapred import job as jobmod
from mapred.collect import PartFiles
from mapred.errors import Interrupted, JobError, JobLoadError, MapredError, NoHostsError, TaskError
from mapred.fetch import fetch_error_host, lost_outputs
from mapred.job import USER_COUNTER
from mapred.journal import Journal, attempt_times, new_run_id, now
from mapred.locality import DigestHints
from mapred.shards import Shard, auto_shard_size, list_inputs, plan
from mapred.transport import Staged, Transport, WorkerHandle, remote_host
from mapred.words import plural

log = logging.getLogger("mapred")

HEARTBEAT_TIMEOUT = 30.0
TICK_SECONDS = 0.25  # how often time passes for the scheduler when nothing else happens
DEFAULT_SEED = 0x6D617072  # "mapr"
DEFAULT_SHARD_LIMIT = 64 << 20
MAX_RESPAWNS = 8  # fresh workers started in one slot after crashes
IO_THREADS = 8  # staging callbacks aside: output checks, collects, probes
INTERNAL = 0  # generation of the runner's own queue messages (workers' start at 1)


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
        self.events: queue.Queue[tuple[str, int, dict[str, Any] | None]] = queue.Queue()
        self.workers: dict[str, WorkerHandle] = {}
        self.slot_host: dict[str, str] = {}
        self.slot_gen: dict[str, int] = {}  # worker generation per slot: fences retired ones
        self.last_seen: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self.host_stats: dict[str, dict[str, float]] = {}
        self.attempt_info: dict[str, dict[str, Any]] = {}
        self.pending_assign: dict[str, scheduler.Assign] = {}  # map attempts being staged
        self.slot_index: dict[str, int] = {}
        self.respawns: dict[str, int] = {}
        self.reducers = 1
        self.journal: Journal | None = None
        self.summary_data: dict[str, Any] | None = None
        self.sched: scheduler.Scheduler | None = None
        self.fingerprint: dict[str, Any] = {}
        self.previous: resume.Previous | None = None
        self.resumed_from: str | None = None
        self.superseded: Path | None = None  # an unfinished earlier run on this output
        self.failed_attempts = 0
        self.deadline_at: float | None = None
        self._closed = False
        self.staging: Path | None = None
        self.out_lock: output.OutputLock | None = None
        self.parts: PartFiles | None = None  # the reduce attempts' part files, once staging
        self.shards: dict[str, Shard] = {}
        self.hints: DigestHints | None = None  # where shards are cached (SSH hosts)
        self.lost_hosts: dict[str, str] = {}  # host -> why it was lost
        self.flapping_kept: set[str] = set()  # flapping, but the last usable host
        self.disk_full: dict[str, str] = {}  # host -> its workdir, where a disk filled up
        self.total_slots = 1  # cores of all hosts, known once planned
        self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="mapred-io")
        self.stage_futures: dict[str, Future[Staged]] = {}
        # attempt -> (host, counters, busy seconds) of every commit; tallied by _tally
        self.committed: dict[str, tuple[str, dict[str, int], float]] = {}
        self.attempts_lost = 0
        self.shards_done: set[str] = set()
        self.ready_slots: set[str] = set()  # slots whose current worker said it is ready
        self.last_exit: dict[str, str] = {}  # slot -> why its last worker exited
        self.parts_done: set[int] = set()  # partitions whose part file is committed
        self.shard_bytes: dict[str, int] = {}  # task -> input bytes shown as mapped
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
        return Summary(self.run_id, self.cfg.output, seconds, self.counters, self.host_stats,
                       len(shards), reducers)

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
        self.shards = {s.task: s for s in shards}
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
        self.journal = Journal(self.cfg.state, self.run_id)
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
            self._write_summary(status, code, error, seconds, len(shards), reducers, detail)
            if self.hints is not None:
                self.hints.save(shards)
            self.journal.event("run_end", status=status, exit_code=code)
            self.journal.close()
        return seconds

    def _run(self, shards: list[Shard], reducers: int) -> None:
        assert self.journal is not None
        cfg = self.cfg
        assert self.out_lock is not None
        self.staging = self.out_lock.stage(self.run_id)
        self.parts = PartFiles(self.staging, self.io, self._post)
        self.journal.event("run_start")
        self.progress.start(sum(s.size for s in shards), len(shards))
        policy = scheduler.Policy(max_attempts=cfg.max_attempts, speculation=cfg.speculation)
        sched = scheduler.Scheduler([s.task for s in shards], reducers,
                                    hosts=list(self.transports), policy=policy)
        self.sched = sched
        self.reducers = reducers
        for t in self.transports.values():
            remote = remote_host(t)
            if remote is not None:
                remote.watch(self._on_host_lost, self._on_host_flapping)
            try:
                t.start(self.run_id)
                self.journal.event("host_scratch", host=t.name, path=t.scratch)
                cores = t.cores
            except NoHostsError as e:  # lost between connecting and now
                self._on_host_lost(t.name, str(e))
                continue
            for i in range(workers_wanted(cores, self.total_slots, max(len(shards), reducers))):
                self._spawn(t, i)
        self._forget_abandoned()
        self._preload(sched)
        self.hints = DigestHints(paths.digest_hints(cfg.state))
        for host, tasks in self.hints.held(shards, self.transports.values()).items():
            self._feed(sched, scheduler.InputsCached(host, tasks))
        self.journal.event("phase", phase="map")
        self._loop(sched)
        self.journal.event("phase", phase="commit")
        self.progress.phase("commit")
        assert self.parts is not None
        self.parts.settle()
        output.commit(self.staging, cfg.output, self.run_id, cfg.overwrite)
        self.staging = None
        self._forget_superseded()
        self._report_faults()

    def _preload(self, sched: scheduler.Scheduler) -> None:
        """--resume: mark the earlier run's reusable map tasks committed."""
        if self.previous is None:
            return
        reusable = dict(self.previous.reusable)  # local hosts: their files checked in place
        reusable.update(self._adopt_kept(self.previous))  # SSH hosts: kept outputs taken over
        reused = 0
        for shard in self.shards.values():
            found = reusable.get(resume.shard_key(shard))
            if found is not None and found[0] in self.transports:
                sched.handle(scheduler.Preloaded(shard.task, found[0], found[1]),
                             time.monotonic())
                self._shard_committed(shard.task)
                reused += 1
        self.counters["map_reused"] = reused
        log.info("resuming run %s: %d of %s reused", self.previous.run_id, reused,
                 plural(len(self.shards), "map task"), extra={"event": "resume", "fields": {
                     "resumed_from": self.previous.run_id, "reused": reused}})

    def _adopt_kept(self, prev: resume.Previous) -> dict[str, tuple[str, dict[int, list[str]]]]:
        """shard key -> (host, outputs) for the map outputs SSH hosts kept for ``prev``.

        Each host moves what it kept into this run's scratch; a task is reused only if every
        one of its files is there with the size and sha256 it was committed with."""
        committed = resume.committed_maps(prev.run_dir)
        old_scratch = resume.scratch_dirs(prev.run_dir)
        keys = {s["task"]: s.get("key") for s in prev.plan.get("shards", [])}
        want = _journal_sums(prev.run_dir)
        out: dict[str, tuple[str, dict[int, list[str]]]] = {}
        for host, t in self.transports.items():
            remote = remote_host(t)
            if remote is None or host in self.lost_hosts or host not in old_scratch:
                continue
            try:
                root, files = remote.adopt(prev.run_id)
                old_map = old_scratch[host].rstrip("/") + "/map/"
                moved = {old_map + rel: f"{root}/{rel}" for rel in files}
                found = remote.checksums(list(moved.values())) if moved else {}
            except MapredError as e:
                log.warning("host %s: cannot reuse the map outputs it kept: %s", host, e)
                continue
            for task, (h, outputs) in committed.items():
                runs = [p for ps in outputs.values() for p in ps]
                if h != host or not keys.get(task) or not all(
                        p in moved and p in want and tuple(want[p]) == found.get(moved[p])
                        for p in runs):
                    continue
                out[str(keys[task])] = (host, {part: [moved[p] for p in ps]
                                               for part, ps in outputs.items()})
        return out

    def _forget_superseded(self) -> None:
        """After a success, remove the scratch an earlier unfinished run left for --resume."""
        if self.superseded is None:
            return
        for host, path in resume.scratch_dirs(self.superseded).items():
            t = self.transports.get(host)
            if t is None or host in self.lost_hosts:
                continue
            remote = remote_host(t)
            if remote is not None:
                remote.forget_runs([self.superseded.name])
            else:
                t.remove([path])

    def _forget_abandoned(self) -> None:
        """Drop map outputs SSH hosts kept for runs that can no longer be resumed: runs of this
        state dir that succeeded, or that a later run on the same output superseded."""
        for t in self.transports.values():
            remote = remote_host(t)
            if remote is None or t.name in self.lost_hosts:
                continue
            garbage = [r for r in remote.kept_runs if self._abandoned(r)]
            if garbage:
                remote.forget_runs(garbage)

    def _abandoned(self, run_id: str) -> bool:
        if self.previous is not None and run_id == self.previous.run_id:
            return False
        run_dir = paths.run_dir(self.cfg.state, run_id)
        try:
            plan = json.loads((run_dir / "plan.json").read_text())
        except (OSError, ValueError):
            return False  # not a run of this state dir: only its age removes it
        found = resume.find_previous(self.cfg.state, Path(plan.get("output_abs", "")))
        return found is None or found[0].name != run_id

    def _spawn(self, t: Transport, index: int) -> None:
        cfg = self.cfg
        assert self.job_files is not None  # planned
        slot = f"{t.name}/{index}"
        self.slot_host[slot] = t.name
        self.slot_index[slot] = index
        if t.name in self.lost_hosts:
            return
        gen = self.slot_gen.get(slot, 0) + 1
        self.slot_gen[slot] = gen
        self.ready_slots.discard(slot)
        try:
            init = {"op": "init", "job": t.job_path(self.job_files), "params": cfg.params,
                    "job_helpers": self.job_files.helpers(),
                    "reducers": self.reducers, "seed": cfg.seed, "scratch": t.scratch,
                    "slots": t.cores, "memory": _per_worker(t.memory, t.cores),
                    "enter_scratch": t.workers_enter_scratch,
                    "job_sha256": self.fingerprint.get("job_sha256"), "sample": self.sample}
            worker = t.spawn_worker(index, functools.partial(self._on_message, gen))
        except (JobError, NoHostsError) as e:  # the host went away under us
            self._on_host_lost(t.name, f"host {t.name}: cannot start a worker: {e}")
            return
        assert worker.slot == slot, (worker.slot, slot)
        self.workers[slot] = worker
        self.last_seen[slot] = time.monotonic()
        worker.send(init)
        assert self.journal is not None
        self.journal.event("worker_start", host=t.name, slot=index)

    def _respawn(self, slot: str, crashed: bool = True) -> None:
        """Start a fresh worker in ``slot`` (its host is up). After MAX_RESPAWNS crashes in a
        slot with no other live worker on its host, the host is given up."""
        host = self.slot_host[slot]
        if host in self.lost_hosts or (self.sched is not None and host in self.sched.excluded):
            return
        if crashed:
            self.respawns[slot] = self.respawns.get(slot, 0) + 1
            if self.respawns[slot] > MAX_RESPAWNS:
                if not any(self.slot_host.get(s) == host for s in self.workers):
                    last = self.last_exit.get(slot, "")
                    self._on_host_lost(host, f"workers on host {host} keep exiting "
                                             f"({MAX_RESPAWNS} restarts in slot {slot})"
                                             + (f"; the last: {last}" if last else ""))
                return
        self._spawn(self.transports[host], self.slot_index[slot])

    def _retire(self, slot: str) -> None:
        """Kill the worker in ``slot`` on purpose: its exit and late messages are ignored."""
        self.slot_gen[slot] = self.slot_gen.get(slot, 0) + 1  # fences the old worker
        worker = self.workers.pop(slot, None)
        if worker is not None:
            worker.kill()

    def _on_message(self, gen: int, slot: str, msg: dict[str, Any] | None) -> None:
        self.events.put((slot, gen, msg))

    def _on_host_lost(self, host: str, reason: str) -> None:
        """Any thread: ``host`` is gone for this run (posted; handled by the loop)."""
        self.events.put((host, INTERNAL, {"ev": "host_lost", "reason": reason}))

    def _on_host_flapping(self, host: str, reason: str) -> None:
        """Any thread: ``host`` keeps dropping out (posted; handled by the loop)."""
        self.events.put((host, INTERNAL, {"ev": "host_flapping", "reason": reason}))

    def _post(self, attempt: str, msg: dict[str, Any]) -> None:
        """Any thread: the outcome of background work for ``attempt``."""
        self.events.put((attempt, INTERNAL, msg))

    # --- event loop -------------------------------------------------------------------------

    def _loop(self, sched: scheduler.Scheduler) -> None:
        reduce_phase = reduce_started = False
        while True:
            now = time.monotonic()
            if self.deadline_at is not None and now > self.deadline_at:
                raise JobError(f"deadline of {self.cfg.deadline:g}s exceeded; run stopped")
            if now - self.last_tick >= TICK_SECONDS:  # even when messages never stop coming
                self.last_tick = now
                if self._tick(sched):
                    return
            try:
                key, gen, msg = self.events.get(timeout=TICK_SECONDS)
            except queue.Empty:
                continue
            if gen == INTERNAL:
                assert msg is not None
                if self._internal(sched, key, msg):
                    return
            elif gen == self.slot_gen.get(key):
                self.last_seen[key] = time.monotonic()
                if self._worker_message(sched, key, msg):
                    return
            # else: a retired worker: its messages and its exit mean nothing now
            if reduce_phase != sched.maps_done():  # back to maps when outputs were lost
                reduce_phase = not reduce_phase
                assert self.journal is not None
                self.journal.event("phase", phase="reduce" if reduce_phase else "map")
                self.progress.phase("reduce" if reduce_phase else "map")
                if reduce_phase and not reduce_started:
                    reduce_started = True
                    self.progress.reduce_start(self.reducers)

    def _tick(self, sched: scheduler.Scheduler) -> bool:
        self.progress.tick()
        if self._feed(sched, scheduler.Tick()):
            return True
        for lost in self._silent_slots():
            if self._feed(sched, scheduler.SlotLost(lost, "worker stopped responding")):
                return True
            self._respawn(lost)
        return False

    def _feed(self, sched: scheduler.Scheduler, event: scheduler.Event) -> bool:
        """Hand one event to the scheduler and carry out its instructions; True when over."""
        for ins in sched.handle(event, time.monotonic()):
            if self._carry_out(ins, sched):
                return True
        return False

    def _silent_slots(self) -> list[str]:
        now = time.monotonic()
        silent = [s for s in self.workers if now - self.last_seen.get(s, now) > HEARTBEAT_TIMEOUT]
        for slot in silent:
            self._retire(slot)
        return silent

    def _worker_message(self, sched: scheduler.Scheduler, slot: str,
                        msg: dict[str, Any] | None) -> bool:
        """Handle one message of a current worker; True when the run is over."""
        host = self.slot_host[slot]
        if msg is None:
            event = self._worker_exited(slot)
            if event is None:
                return False
            if self._feed(sched, event):
                return True
            self._respawn(slot)
            return False
        ev = msg.get("ev")
        if ev == "ready":
            self.ready_slots.add(slot)
            self._warn_once([self._local_text(host, w) for w in msg.get("warnings") or []])
            if not msg.get("again"):
                assert self.journal is not None
                self.journal.event("worker_ready", host=host, slot=self.slot_index[slot])
            return self._feed(sched, scheduler.SlotReady(slot, host))
        if ev == "init_failed":
            detail = msg.get("detail")
            raise JobLoadError(self._local_text(host, msg["error"]),
                               detail=self._local_text(host, detail) if detail else None)
        if ev == "progress":
            self._mapped(msg["attempt"], int(msg["bytes"]))
        elif ev == "fetched" and msg.get("attempt") in self.attempt_info:
            self.attempt_info[msg["attempt"]]["fetched"] = {"end": now(),
                                                            "bytes": int(msg.get("bytes", 0))}
        elif ev == "done" and sched.is_running(slot, msg["attempt"]):
            self._finish(msg)
        elif ev == "failed":
            self._failure(sched, slot, msg)
        return False  # "alive" and unknown events only refresh the heartbeat

    def _warn_once(self, warnings: list[str]) -> None:
        """The job's warnings (a parameter init never read...): every worker sends them."""
        for text in warnings:
            if text not in self.job_warnings:
                self.job_warnings.add(text)
                log.warning("%s", text, extra={"event": "job_warning"})

    def _finish(self, msg: dict[str, Any]) -> None:
        """A worker finished an attempt: check its map outputs, or collect its part file, on
        another thread; the attempt commits when that is done (``done`` posted)."""
        attempt = msg["attempt"]
        info = self.attempt_info[attempt]
        info["maxrss"] = msg.get("maxrss")  # the worker's peak RSS so far, journaled
        t = self.transports[info["host"]]
        outputs = {int(p): list(v) for p, v in msg.get("outputs", {}).items()}
        done = {"ev": "done", "outputs": outputs, "counters": msg.get("counters", {})}
        if info["kind"] == scheduler.MAP:
            remote = remote_host(t)
            files = [p for runs in outputs.values() for p in runs]
            if remote is None or not files:
                self._post(attempt, done)
                return
            info["reported"] = now()  # the journal shows the check
            self.io.submit(self._check_outputs, attempt, remote.checksums, files, done)
        else:
            assert self.parts is not None
            info["reported"] = now()  # the journal shows the collect
            self.parts.collect(attempt, t, info["out"], info["partition"], done)

    def _check_outputs(self, attempt: str, checksums: Callable[[list[str]], dict[str, Any]],
                       files: list[str], done: dict[str, Any]) -> None:
        try:
            sums = checksums(files)
            missing = [p for p in files if p not in sums]
            if missing:
                raise JobError(f"map output {missing[0]} is missing")
        except Exception as e:  # noqa: BLE001 - a failure of the attempt
            self._post(attempt, {"ev": "failed", "error": f"checking its map outputs failed: {e}"})
            return
        self._post(attempt, {**done, "sums": {p: list(sums[p]) for p in files}})

    def _failure(self, sched: scheduler.Scheduler, slot: str, msg: dict[str, Any]) -> None:
        """A worker reports a failed attempt. A reduce that could not fetch from a host waits for
        that host to answer (or be lost) before its failure counts."""
        attempt = msg["attempt"]
        host = self.slot_host.get(slot, "")
        detail = msg.get("detail")
        msg = {**msg, "error": self._local_text(host, str(msg.get("error", ""))),
               "detail": self._local_text(host, detail) if detail else detail}
        source = fetch_error_host(str(msg.get("error", "")))
        peer = remote_host(self.transports.get(source or ""))
        held = {"ev": "failed", "slot": slot, "error": msg["error"], "detail": msg.get("detail")}
        if peer is not None and source not in self.lost_hosts and \
                sched.is_running(slot, attempt):
            def wait_for_peer() -> None:
                peer.probe()
                self._post(attempt, held)
            self.io.submit(wait_for_peer)
            return
        self._attempt_failed(sched, slot, attempt, msg["error"], msg.get("detail"))

    def _internal(self, sched: scheduler.Scheduler, key: str, msg: dict[str, Any]) -> bool:
        """The runner's own messages: a host lost, background work for an attempt done."""
        ev = msg["ev"]
        if ev == "host_lost":
            return self._host_lost(sched, key, str(msg["reason"]))
        if ev == "host_flapping":
            return self._host_flapping(sched, key, str(msg["reason"]))
        info = self.attempt_info.get(key)
        if info is None:
            return False
        slot = info["slot_id"]
        if ev == "staged":
            self.stage_futures.pop(key, None)
            ins = self.pending_assign.pop(key, None)
            if ins is not None:
                info["staging"].update(msg["staging"])
                self._send(ins, {"op": "map", "task": ins.task, "attempt": ins.attempt,
                                 "pieces": msg["pieces"]})
                return self._feed(sched, scheduler.InputsCached(info["host"],
                                                                frozenset({ins.task})))
            return False
        if ev == "failed":
            if self._outputs_lost(sched, str(msg["error"])):
                return True
            return self._attempt_failed(sched, msg.get("slot", slot), key, str(msg["error"]),
                                        msg.get("detail"))
        if ev == "done":
            info["sums"] = msg.get("sums")
            return self._feed(sched, scheduler.AttemptDone(slot, key, msg["outputs"],
                                                           msg["counters"]))
        return False

    def _outputs_lost(self, sched: scheduler.Scheduler, error: str) -> bool:
        """A fetch found committed map outputs missing or damaged on a host that still answers:
        those map tasks run again (the failed reduce is cancelled with the others, uncounted).
        True when the run is over."""
        for name in lost_outputs(error):
            task = sched.tasks.get(name.split(".", 1)[0])
            if task is None or task.state != "done" or not any(
                    p.endswith("/" + name) for ps in task.outputs.values() for p in ps):
                continue
            log.warning("map output %s of %s on %s is missing or damaged: %s runs again", name,
                        task.committed, task.host, task.id)
            assert self.journal is not None
            self.journal.event("output_lost", task=task.id, host=task.host, output=name)
            if self._feed(sched, scheduler.MapOutputLost(task.id, f"{name} missing or damaged")):
                return True
        return False

    def _attempt_failed(self, sched: scheduler.Scheduler, slot: str, attempt: str, error: str,
                        detail: str | None) -> bool:
        """A failure of a running attempt: counted, logged, its files dropped, retried later."""
        if not sched.is_running(slot, attempt):
            return False  # fenced: it already ended (cancelled, or its host was lost)
        host = self.slot_host[slot]
        self.failed_attempts += 1
        if diagnose.disk_full(error):
            self.disk_full[host] = _disk_of(self.transports[host])
        log.warning("attempt %s failed on %s: %s", attempt, host, error,
                    extra={"event": "attempt_failed", "fields": {"attempt": attempt,
                                                                 "host": host}})
        self._end_attempt(attempt, "failed", error=error, detail=detail)
        self._drop_files(attempt)
        worker_log = getattr(self.workers.get(slot), "log", None)
        if worker_log is not None:  # where the user's print() output of that attempt went
            detail = (f"{detail}\n" if detail else "") + f"worker log (print, stderr): {worker_log}"
        return self._feed(sched, scheduler.AttemptFailed(slot, attempt, error, detail))

    def _host_lost(self, sched: scheduler.Scheduler, host: str, reason: str) -> bool:
        """Give ``host`` up for the rest of the run: fence its workers, end its attempts as
        lost (not failures), tell the scheduler (its committed maps run again elsewhere)."""
        if host in self.lost_hosts or host not in self.transports:
            return False
        assert self.journal is not None
        self.lost_hosts[host] = reason
        log.warning("%s; its work moves to the other hosts", reason,
                    extra={"event": "host_lost", "fields": {"host": host}})
        self.journal.event("host_lost", host=host, reason=reason)
        remote = remote_host(self.transports[host])
        if remote is not None:
            remote.lose(reason)  # it stops everything it does there (if it has not yet)
        for slot in [s for s, h in self.slot_host.items() if h == host]:
            self._retire(slot)
        for attempt, info in list(self.attempt_info.items()):
            if info.get("open") and info["host"] == host:
                self.pending_assign.pop(attempt, None)
                fut = self.stage_futures.pop(attempt, None)
                if fut is not None:
                    fut.cancel()
                self.attempts_lost += 1
                self._end_attempt(attempt, "lost", error=reason)
        return self._feed(sched, scheduler.HostLost(host, reason))

    def _host_flapping(self, sched: scheduler.Scheduler, host: str, reason: str) -> bool:
        """A host whose link keeps going down and up is excluded like a lost one (the map
        outputs it holds, which it may fail to serve, run again elsewhere) — never the last."""
        if host in self.lost_hosts or host not in self.transports:
            return False
        if not sched.usable_hosts() - {host}:
            if host not in self.flapping_kept:
                self.flapping_kept.add(host)
                log.warning("%s, but it is the last usable host: the run carries on with it",
                            reason, extra={"event": "host_flapping", "fields": {"host": host}})
            return False
        return self._host_lost(sched, host, f"{reason}: excluded")

    def _worker_exited(self, slot: str) -> scheduler.Event | None:
        worker = self.workers.pop(slot, None)
        if worker is None:
            return None
        tail = worker.stderr_tail()
        reason = "worker process exited unexpectedly"
        if slot not in self.ready_slots:  # the job's own code runs there: say so
            reason = ("worker process exited while starting (loading the job and running it on "
                      "the corpus's first records)")
        if tail:
            reason += ": " + tail.splitlines()[-1]
        log_path = getattr(worker, "log", None)
        self.last_exit[slot] = reason + (f"; worker log: {log_path}" if log_path else "")
        log.warning("%s on %s", reason, slot)
        return scheduler.SlotLost(slot, reason)

    # --- instructions -----------------------------------------------------------------------

    def _carry_out(self, ins: scheduler.Instruction, sched: scheduler.Scheduler) -> bool:
        """Do what the scheduler asks; True when the run is over."""
        if isinstance(ins, scheduler.Assign):
            self._assign(ins)
        elif isinstance(ins, scheduler.Commit):
            self._commit(ins)
        elif isinstance(ins, scheduler.Discard):
            self.transports[ins.host].remove(list(ins.paths))
        elif isinstance(ins, scheduler.Cancel):
            self._cancel(ins)
        elif isinstance(ins, scheduler.ExcludeHost):
            self._exclude(ins)
        elif isinstance(ins, scheduler.Failed):
            raise self._task_error(ins, sched)
        elif isinstance(ins, scheduler.NoHosts):
            raise NoHostsError(ins.reason)
        elif isinstance(ins, scheduler.Finished):
            return True
        return False

    def _cancel(self, ins: scheduler.Cancel) -> None:
        """Kill the losing attempt's worker, drop its files, start a fresh worker. An attempt
        still being staged never reached its worker: that worker stays and is idle again."""
        fut = self.stage_futures.pop(ins.attempt, None)
        if fut is not None:
            fut.cancel()
        self._end_attempt(ins.attempt, "killed", error=ins.reason)
        if self.pending_assign.pop(ins.attempt, None) is not None and ins.slot in self.workers:
            # (killing it would make it remove its last task's files: a committed map's)
            self.events.put((ins.slot, self.slot_gen[ins.slot], {"ev": "ready", "again": True}))
            return
        self._retire(ins.slot)
        self._drop_files(ins.attempt)
        self._respawn(ins.slot, crashed=False)

    def _exclude(self, ins: scheduler.ExcludeHost) -> None:
        assert self.journal is not None
        log.warning("excluding host %s for the rest of the run: %s", ins.host, ins.reason,
                    extra={"event": "host_excluded", "fields": {"host": ins.host}})
        self.journal.event("host_excluded", host=ins.host, reason=ins.reason)
        busy = {info["slot_id"] for info in self.attempt_info.values() if info.get("open")}
        for slot in [s for s, h in self.slot_host.items() if h == ins.host]:
            worker = self.workers.get(slot)
            if slot in busy or worker is None:
                self._retire(slot)  # stops its attempt (which the scheduler dropped)
            else:  # idle: it quits; killed, it would remove its last (committed) task's files
                self.slot_gen[slot] = self.slot_gen.get(slot, 0) + 1
                del self.workers[slot]
                worker.send({"op": "quit"})

    def _drop_files(self, attempt: str) -> None:
        """Remove what an attempt that will never commit wrote (its map dir, its part file)."""
        info = self.attempt_info.get(attempt)
        if info is None:
            return
        transport = self.transports[info["host"]]
        if info["host"] in self.lost_hosts:
            return  # nothing reaches it any more; its agent removes the run's scratch
        try:
            if info["kind"] == scheduler.MAP:
                transport.remove([str(paths.map_attempt_dir(Path(transport.scratch), attempt))])
            elif "out" in info:
                transport.remove([info["out"]])
        except MapredError as e:
            log.debug("cannot remove the files of %s on %s: %s", attempt, info["host"], e)

    def _assign(self, ins: scheduler.Assign) -> None:
        assert self.journal is not None and self.staging is not None
        host = self.slot_host[ins.slot]
        transport = self.transports[host]
        info: dict[str, Any] = {"task": ins.task, "kind": ins.kind, "attempt": ins.attempt,
                                "host": host, "slot": int(ins.slot.rsplit("/", 1)[1]),
                                "backup": ins.backup, "t0": time.monotonic(), "open": True,
                                "slot_id": ins.slot}
        self.attempt_info[ins.attempt] = info
        try:
            if ins.kind == scheduler.MAP:
                self.pending_assign[ins.attempt] = ins
                shard = self.shards[ins.task]
                info["shard"] = _shard_info(shard)
                info["staging"] = {"start": now()}  # task_start carries it, with its end
                fut = transport.prepare(shard)
                self.stage_futures[ins.attempt] = fut
                fut.add_done_callback(functools.partial(self._staged, ins.attempt))
            else:
                info["partition"] = ins.partition
                out = transport.reduce_output(self.staging, ins.partition, ins.attempt)
                info["out"] = out
                self._send(ins, {"op": "reduce", "task": ins.task, "attempt": ins.attempt,
                                 "partition": ins.partition, "out": out,
                                 "inputs": transport.reduce_inputs(list(ins.inputs))})
        except MapredError as e:  # a failure of this attempt, not of the run
            self._post(ins.attempt, {"ev": "failed", "error": f"starting it failed: {e}"})

    def _staged(self, attempt: str, fut: Future[Staged]) -> None:
        """Called on any thread when a map input is in place (or not): post it to the loop."""
        if fut.cancelled():
            return  # the attempt ended already
        error = fut.exception()
        if error is not None:
            self._post(attempt, {"ev": "failed", "error": f"staging the input failed: {error}"})
        else:
            staged = fut.result()
            self._post(attempt, {"ev": "staged", "pieces": staged.pieces,
                                 "staging": {"end": now(), **staged.journal()}})

    def _send(self, ins: scheduler.Assign, msg: dict[str, Any]) -> None:
        assert self.journal is not None
        info = self.attempt_info[ins.attempt]
        info["t0"] = time.monotonic()
        self.journal.event("task_start", **{k: v for k, v in info.items()
                                            if k not in ("t0", "out", "open")})
        worker = self.workers.get(ins.slot)
        if worker is not None:
            worker.send(msg)

    def _commit(self, ins: scheduler.Commit) -> None:
        """The attempt's results become the task's: its part file takes its final name, or its
        map outputs are marked to be kept (for --resume). Counters are tallied from commits."""
        assert self.staging is not None and self.sched is not None
        info = self.attempt_info[ins.attempt]
        outputs = None
        if ins.kind == scheduler.REDUCE:
            assert self.parts is not None
            self.parts.commit(ins.attempt, info["partition"])
            if info["partition"] not in self.parts_done:
                self.parts_done.add(info["partition"])
                self.progress.partition_done()
        else:
            self._shard_committed(ins.task)
            outputs = self.sched.tasks[ins.task].outputs
            t = self.transports[ins.host]
            remote = remote_host(t)
            if remote is not None:
                remote.keep([str(paths.map_attempt_dir(Path(t.scratch), ins.attempt))])
        self.committed[ins.attempt] = (ins.host, dict(ins.counters),
                                       time.monotonic() - info["t0"])
        self._end_attempt(ins.attempt, "ok", counters=ins.counters, outputs=outputs,
                          sums=info.get("sums"))

    def _mapped(self, attempt: str, nbytes: int) -> None:
        """A map attempt read ``nbytes`` more: the bar shows each shard's furthest attempt."""
        info = self.attempt_info.get(attempt)
        if info is None or info["kind"] != scheduler.MAP or info["task"] not in self.shards:
            return
        info["mapped"] = done = info.get("mapped", 0) + nbytes
        self._show_mapped(info["task"], done)

    def _show_mapped(self, task: str, done: int) -> None:
        shown = self.shard_bytes.get(task, 0)
        done = min(done, self.shards[task].size)
        if done > shown:
            self.shard_bytes[task] = done
            self.progress.advance(done - shown)

    def _shard_committed(self, task: str) -> None:
        self._show_mapped(task, self.shards[task].size)
        if task not in self.shards_done:
            self.shards_done.add(task)
            self.progress.shard_done()

    def _tally(self) -> None:
        """Counters and per-host figures of the attempts committed now (a map attempt whose
        outputs were lost with its host no longer counts: its rerun does)."""
        counters: dict[str, int] = {}
        hosts: dict[str, dict[str, float]] = {}
        sched = self.sched
        current = {t.committed: t.kind for t in sched.tasks.values()} if sched else {}
        for attempt, (host, values, busy) in self.committed.items():
            kind = current.get(attempt)
            if kind is None:
                continue
            for key, value in values.items():
                name = f"{kind}_{key}"
                counters[name] = counters.get(name, 0) + int(value)
            stats = hosts.setdefault(host, {"tasks": 0, "bytes_in": 0, "busy_seconds": 0.0})
            stats["tasks"] += 1
            stats["bytes_in"] += int(values.get("bytes_in", 0))
            stats["busy_seconds"] += busy
        if "map_reused" in self.counters:
            counters["map_reused"] = self.counters["map_reused"]
        mapped = [self.shards[t] for t in self.shards_done if t in self.shards]
        counters["input_bytes"] = sum(s.size for s in mapped)  # as planned: on disk
        counters["input_gzip"] = int(any(p.file.gzip for s in mapped for p in s.pieces))
        self.counters, self.host_stats = counters, hosts

    def _end_attempt(self, attempt: str, outcome: str, error: str | None = None,
                     counters: dict[str, int] | None = None,
                     outputs: dict[int, list[str]] | None = None,
                     sums: dict[str, list[Any]] | None = None, detail: str | None = None) -> None:
        assert self.journal is not None
        info = self.attempt_info.get(attempt)
        if info is None or not info.get("open"):
            return
        info["open"] = False
        if outcome != "ok" and info["kind"] == scheduler.REDUCE and self.parts is not None:
            self.parts.fence(attempt, info["partition"])  # its part file must never land
        c = counters or {}
        self.journal.event(
            "task_end", task=info["task"], kind=info["kind"], attempt=attempt,
            host=info["host"], slot=info["slot"], outcome=outcome,
            bytes_in=int(c.get("bytes_in", 0)), bytes_out=int(c.get("bytes_out", 0)),
            records=int(c.get("records", 0)), keys=int(c.get("keys", c.get("keys_out", 0))),
            error=error, **({"outputs": outputs} if outputs is not None else {}),
            **({"sums": sums} if sums else {}), **({"detail": detail} if detail else {}),
            **({"maxrss": info["maxrss"]} if info.get("maxrss") else {}),
            **attempt_times(info))

    def _local_text(self, host: str, text: str) -> str:
        """An error from ``host`` naming the job's files here, not their copies there."""
        t = self.transports.get(host)
        if t is None or self.job_files is None:
            return text
        try:
            return self.job_files.localize(text, t.job_path(self.job_files))
        except MapredError:  # the host is gone: its names will do
            return text

    def _task_error(self, ins: scheduler.Failed, sched: scheduler.Scheduler) -> TaskError:
        task = sched.tasks[ins.task]
        where = ""
        if task.kind == scheduler.MAP:
            where = f" ({self.shards[ins.task].describe()})"
        else:
            where = f" (partition {task.partition})"
        message = (f"{task.kind} task {ins.task}{where} failed {plural(task.failures, 'time')}; "
                   f"last on host {ins.host}: {ins.error}")
        if diagnose.disk_full(ins.error) and self.disk_full:  # not the task's fault: the disks'
            every = set(self.disk_full) >= set(self.transports) - set(self.lost_hosts)
            line = diagnose.disk_full_line(self.disk_full, every=every)
            return TaskError(f"{task.kind} task {ins.task}{where} failed "
                             f"{plural(task.failures, 'time')}: {line}", task=ins.task,
                             host=ins.host, shard=where.strip(" ()"))
        return TaskError(message, task=ins.task, host=ins.host, shard=where.strip(" ()"),
                         detail=ins.detail)

    # --- shutdown and journal ---------------------------------------------------------------

    def _report_faults(self) -> None:
        """One line after a successful run that had to recover from something."""
        sched = self.sched
        if sched is None or not (self.lost_hosts or self.failed_attempts or sched.backups):
            return
        parts = []
        if self.lost_hosts:
            parts.append(f"{plural(len(self.lost_hosts), 'host')} lost "
                         f"({', '.join(self.lost_hosts)}; {plural(self.attempts_lost, 'attempt')} "
                         f"lost, {plural(sched.maps_rerun, 'committed map task')} rerun)")
        if self.failed_attempts:
            parts.append(f"{plural(self.failed_attempts, 'failed attempt')} retried")
        if sched.backups:
            parts.append(f"{plural(sched.backups, 'backup attempt')} for stragglers")
        log.info("recovered: %s", "; ".join(parts), extra={"event": "recovered", "fields": {
            "hosts_lost": sorted(self.lost_hosts), "retries": self.failed_attempts,
            "backups": sched.backups}})

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot, worker in list(self.workers.items()):
            self.slot_gen[slot] = -1
            worker.send({"op": "quit"})
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
        cfg = self.cfg
        self.journal.write_json("plan.json", {
            "run_id": self.run_id, "job": str(cfg.job), "corpus": str(cfg.corpus),
            "output": str(cfg.output), "output_abs": str(cfg.output.resolve()),
            "argv": list(cfg.argv), "started": time.time(),
            "pid": os.getpid(), "reducers": reducers, "params": cfg.params,
            "fingerprint": self.fingerprint, "resumed_from": self.resumed_from,
            "hosts": [{"name": t.name, "address": t.address, "cores": t.cores}
                      for t in self.transports.values()],
            "shards": [{"task": s.task, **_shard_info(s), "key": resume.shard_key(s)}
                       for s in shards],
        })

    def _committed_tasks(self, kind: str) -> int:
        if self.sched is None:
            return 0
        return sum(1 for t in self.sched.tasks.values() if t.kind == kind and t.committed)

    def _write_summary(self, status: str, code: int, error: str | None, seconds: float,
                       nshards: int, reducers: int, detail: str | None = None) -> None:
        assert self.journal is not None
        self._tally()
        c = self.counters
        self.summary_data = {
            "run_id": self.run_id, "job": str(self.cfg.job), "corpus": str(self.cfg.corpus),
            "output": str(self.cfg.output), "status": status, "exit_code": code,
            "started": time.time() - seconds, "ended": time.time(), "duration": seconds,
            "error": error, "detail": detail,
            "counters": {
                "bytes_in": c.get("map_bytes_in", 0), "records_in": c.get("map_records", 0),
                "input_bytes": c.get("input_bytes", 0),
                "pairs": c.get("map_pairs", 0), "keys_out": c.get("reduce_keys_out", 0),
                "bytes_out": c.get("reduce_bytes_out", 0), "shuffle_bytes":
                c.get("map_bytes_out", 0), "map_tasks": self._committed_tasks(scheduler.MAP),
                "reduce_tasks": self._committed_tasks(scheduler.REDUCE),
                "map_tasks_planned": nshards, "reduce_tasks_planned": reducers,
                "spills": c.get("map_spills", 0), "retries": self.failed_attempts,
                "maps_reused": c.get("map_reused", 0),
                "backups": self.sched.backups if self.sched else 0,
                "hosts_lost": len(self.lost_hosts),
                "attempts_lost": self.attempts_lost,
                "maps_rerun": self.sched.maps_rerun if self.sched else 0,
                **user_counters(c),
            },
            "hosts": self.host_stats,
            "lost_hosts": dict(self.lost_hosts),
        }
        self.journal.write_json("summary.json", self.summary_data)


def user_counters(counters: dict[str, int]) -> dict[str, int]:
    """``user.NAME`` -> total of the job's own counters (ctx.count) over committed tasks."""
    prefix = f"{scheduler.MAP}_{USER_COUNTER}"
    return {k[len(scheduler.MAP) + 1:]: v for k, v in sorted(counters.items())
            if k.startswith(prefix)}


def _journal_sums(run_dir: Path) -> dict[str, list[Any]]:
    """map output path -> [size, sha256] from a run's committed map attempts."""
    out: dict[str, list[Any]] = {}
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if ev.get("event") == "task_end" and ev.get("outcome") == "ok" and ev.get("sums"):
            out.update(ev["sums"])
    return out


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


def _shard_info(shard: Shard) -> dict[str, Any]:
    """How the journal shows a shard: its first file and byte range, and its file count."""
    first = shard.pieces[0]
    end = first.end if len(shard.pieces) == 1 else shard.pieces[-1].end
    return {"path": first.file.rel, "start": first.start, "end": end,
            "files": len(shard.pieces), "bytes": shard.size}


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
