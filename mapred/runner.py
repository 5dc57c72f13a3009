"""Drives one run: plan, start workers through transports, feed the scheduler, commit output.

The runner is the only place that turns scheduler instructions into I/O. Worker messages arrive
on one queue (each worker has a reader thread); the main thread handles them in order, so the
scheduler needs no locks. Whatever happens, ``Runner.execute`` kills every worker, removes
scratch and staging directories, and closes the journal before it returns or raises.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapred import job as jobmod
from mapred import logs, output, paths, resume, scheduler
from mapred.errors import Interrupted, JobError, JobLoadError, NoHostsError, TaskError
from mapred.journal import Journal, new_run_id
from mapred.shards import Shard, auto_shard_size, list_inputs, plan
from mapred.transport import Transport, WorkerHandle

log = logging.getLogger("mapred")

HEARTBEAT_TIMEOUT = 30.0
TICK_SECONDS = 0.25  # how often time passes for the scheduler when nothing else happens
DEFAULT_SEED = 0x6D617072  # "mapr"
DEFAULT_SHARD_LIMIT = 64 << 20
MAX_RESPAWNS = 8  # fresh workers started in one slot after crashes


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
    """What the runner reports as it goes; the CLI supplies a tqdm bar or log lines."""

    def start(self, total_bytes: int, shards: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def shard_done(self) -> None: ...
    def phase(self, name: str) -> None: ...
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
        self.shards: dict[str, Shard] = {}

    # --- the whole run ----------------------------------------------------------------------

    def execute(self) -> Summary:
        """Run the job; whatever happens, workers, scratch and staging are gone on return."""
        started = time.monotonic()
        if self.cfg.deadline is not None:
            self.deadline_at = started + self.cfg.deadline
        logs.context["run_id"] = self.run_id
        try:
            with output.OutputLock(self.cfg.state, self.cfg.output), _signals_raise():
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
        output.check_output(cfg.output, cfg.corpus, cfg.overwrite)
        jobmod.check_syntax(cfg.job)
        files = list_inputs(cfg.corpus)
        slots = sum(t.cores for t in self.transports.values())
        found = resume.find_previous(cfg.state, cfg.output)
        shard_size = cfg.shard_size or auto_shard_size(sum(f.size for f in files), slots,
                                                       DEFAULT_SHARD_LIMIT)
        reducers = cfg.reducers or max(1, slots)
        if cfg.resume and found is not None:  # same cuts and reducers as the earlier run
            old = found[1].get("fingerprint") or {}
            shard_size = cfg.shard_size or old.get("shard_size") or shard_size
            reducers = cfg.reducers or old.get("reducers") or reducers
        shards = plan(files, shard_size)
        self.shards = {s.task: s for s in shards}
        self.fingerprint = resume.job_fingerprint(cfg.job, cfg.params, reducers, cfg.seed,
                                                  shard_size)
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
        status, code, error = "failed", 1, None
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
            code, error = getattr(e, "exit_code", 1), str(e)
            raise
        finally:
            self._shutdown()
            output.abandon(self.staging)
            seconds = time.monotonic() - started
            self._write_summary(status, code, error, seconds, len(shards), reducers)
            self.journal.event("run_end", status=status, exit_code=code)
            self.journal.close()
        return seconds

    def _run(self, shards: list[Shard], reducers: int) -> None:
        assert self.journal is not None
        cfg = self.cfg
        self.staging = output.make_staging(cfg.output, self.run_id)
        self.journal.event("run_start")
        self.progress.start(sum(s.size for s in shards), len(shards))
        policy = scheduler.Policy(max_attempts=cfg.max_attempts, speculation=cfg.speculation)
        sched = scheduler.Scheduler([s.task for s in shards], reducers,
                                    hosts=list(self.transports), policy=policy)
        self.sched = sched
        self.reducers = reducers
        for t in self.transports.values():
            t.start(self.run_id)
            self.journal.event("host_scratch", host=t.name, path=t.scratch)
            for i in range(t.cores):
                self._spawn(t, i)
        self._preload(sched)
        self.journal.event("phase", phase="map")
        self._loop(sched)
        self.journal.event("phase", phase="commit")
        self.progress.phase("commit")
        output.commit(self.staging, cfg.output, self.run_id, cfg.overwrite)
        self.staging = None
        self._forget_superseded()

    def _preload(self, sched: scheduler.Scheduler) -> None:
        """--resume: mark the earlier run's reusable map tasks committed."""
        if self.previous is None:
            return
        reused = 0
        for shard in self.shards.values():
            found = self.previous.reusable.get(resume.shard_key(shard))
            if found is not None and found[0] in self.transports:
                sched.handle(scheduler.Preloaded(shard.task, found[0], found[1]),
                             time.monotonic())
                self.progress.advance(shard.size)
                self.progress.shard_done()
                reused += 1
        self.counters["map_reused"] = reused
        log.info("resuming run %s: %d of %d map tasks reused", self.previous.run_id, reused,
                 len(self.shards), extra={"event": "resume", "fields": {
                     "resumed_from": self.previous.run_id, "reused": reused}})

    def _forget_superseded(self) -> None:
        """After a success, remove the scratch an earlier unfinished run left for --resume."""
        if self.superseded is None:
            return
        for host, path in resume.scratch_dirs(self.superseded).items():
            if host in self.transports:
                self.transports[host].remove([path])

    def _spawn(self, t: Transport, index: int) -> None:
        cfg = self.cfg
        slot = f"{t.name}/{index}"
        gen = self.slot_gen.get(slot, 0) + 1
        self.slot_gen[slot] = gen
        worker = t.spawn_worker(index, functools.partial(self._on_message, gen))
        assert worker.slot == slot, (worker.slot, slot)
        self.workers[slot] = worker
        self.slot_host[slot] = t.name
        self.slot_index[slot] = index
        self.last_seen[slot] = time.monotonic()
        worker.send({"op": "init", "job": t.job_path(cfg.job), "params": cfg.params,
                     "reducers": self.reducers, "seed": cfg.seed, "scratch": t.scratch,
                     "slots": t.cores, "memory": _per_worker(t.memory, t.cores)})

    def _respawn(self, slot: str) -> None:
        """A worker died while its host stays up: start a fresh one in its place (bounded)."""
        self.respawns[slot] = self.respawns.get(slot, 0) + 1
        if self.respawns[slot] <= MAX_RESPAWNS:
            self._spawn(self.transports[self.slot_host[slot]], self.slot_index[slot])

    def _retire(self, slot: str) -> None:
        """Kill the worker in ``slot`` on purpose: its exit and late messages are ignored."""
        self.slot_gen[slot] = self.slot_gen.get(slot, 0) + 1  # fences the old worker
        worker = self.workers.pop(slot, None)
        if worker is not None:
            worker.kill()

    def _on_message(self, gen: int, slot: str, msg: dict[str, Any] | None) -> None:
        self.events.put((slot, gen, msg))

    # --- event loop -------------------------------------------------------------------------

    def _loop(self, sched: scheduler.Scheduler) -> None:
        reduce_phase = False
        while True:
            if self.deadline_at is not None and time.monotonic() > self.deadline_at:
                raise JobError(f"deadline of {self.cfg.deadline:g}s exceeded; run stopped")
            try:
                slot, gen, msg = self.events.get(timeout=TICK_SECONDS)
            except queue.Empty:
                if self._feed(sched, scheduler.Tick()):
                    return
                for lost in self._silent_slots():
                    if self._feed(sched, scheduler.SlotLost(lost, "worker stopped responding")):
                        return
                    self._respawn(lost)
                continue
            if gen != self.slot_gen.get(slot):
                continue  # a retired worker: its messages and its exit mean nothing now
            self.last_seen[slot] = time.monotonic()
            event = self._to_event(slot, msg)
            if event is not None and self._feed(sched, event):
                return
            if isinstance(event, scheduler.SlotLost):
                self._respawn(slot)
            if not reduce_phase and sched.maps_done():
                reduce_phase = True
                assert self.journal is not None
                self.journal.event("phase", phase="reduce")
                self.progress.phase("reduce")

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

    def _to_event(self, slot: str, msg: dict[str, Any] | None) -> scheduler.Event | None:
        host = self.slot_host[slot]
        if msg is None:
            return self._worker_exited(slot)
        ev = msg.get("ev")
        if ev == "ready":
            return scheduler.SlotReady(slot, host)
        if ev == "init_failed":
            raise JobLoadError(msg["error"], detail=msg.get("detail"))
        if ev == "staged":
            ins = self.pending_assign.pop(msg["attempt"], None)
            if ins is not None:
                self._send(ins, {"op": "map", "task": ins.task, "attempt": ins.attempt,
                                 "pieces": msg["pieces"]})
            return None
        if ev == "progress":
            self.progress.advance(int(msg["bytes"]))
            return None
        if ev == "done":
            outputs = {int(p): list(v) for p, v in msg.get("outputs", {}).items()}
            return scheduler.AttemptDone(slot, msg["attempt"], outputs, msg.get("counters", {}))
        if ev == "failed":
            if self.attempt_info.get(msg["attempt"], {}).get("open"):
                self.failed_attempts += 1
                log.warning("attempt %s failed on %s: %s", msg["attempt"], host, msg["error"],
                            extra={"event": "attempt_failed", "fields": {
                                "attempt": msg["attempt"], "host": host}})
            self._end_attempt(msg["attempt"], "failed", error=msg["error"])
            return scheduler.AttemptFailed(slot, msg["attempt"], msg["error"], msg.get("detail"))
        return None  # "alive" and unknown events only refresh the heartbeat

    def _worker_exited(self, slot: str) -> scheduler.Event | None:
        worker = self.workers.pop(slot, None)
        if worker is None:
            return None
        tail = worker.stderr_tail()
        reason = "worker process exited unexpectedly"
        if tail:
            reason += ": " + tail.splitlines()[-1]
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
        """Kill the losing attempt's worker, drop its files, start a fresh worker."""
        self._retire(ins.slot)
        self.pending_assign.pop(ins.attempt, None)
        self._end_attempt(ins.attempt, "killed", error=ins.reason)
        self._drop_files(ins.attempt)
        self._respawn(ins.slot)

    def _exclude(self, ins: scheduler.ExcludeHost) -> None:
        assert self.journal is not None
        log.warning("excluding host %s for the rest of the run: %s", ins.host, ins.reason,
                    extra={"event": "host_excluded", "fields": {"host": ins.host}})
        self.journal.event("host_excluded", host=ins.host, reason=ins.reason)
        for slot in [s for s, h in self.slot_host.items() if h == ins.host]:
            self._retire(slot)

    def _drop_files(self, attempt: str) -> None:
        """Remove what an attempt that will never commit wrote (its map dir, its part file)."""
        info = self.attempt_info.get(attempt)
        if info is None:
            return
        transport = self.transports[info["host"]]
        if info["kind"] == scheduler.MAP:
            transport.remove([str(paths.map_attempt_dir(Path(transport.scratch), attempt))])
        elif "out" in info:
            transport.remove([info["out"]])

    def _assign(self, ins: scheduler.Assign) -> None:
        assert self.journal is not None and self.staging is not None
        host = self.slot_host[ins.slot]
        transport = self.transports[host]
        info: dict[str, Any] = {"task": ins.task, "kind": ins.kind, "attempt": ins.attempt,
                                "host": host, "slot": int(ins.slot.rsplit("/", 1)[1]),
                                "backup": ins.backup, "t0": time.monotonic(), "open": True}
        self.attempt_info[ins.attempt] = info
        if ins.kind == scheduler.MAP:
            self.pending_assign[ins.attempt] = ins
            shard = self.shards[ins.task]
            info["shard"] = _shard_info(shard)
            fut = transport.prepare(shard)
            fut.add_done_callback(functools.partial(self._staged, ins))
        else:
            info["partition"] = ins.partition
            out = transport.reduce_output(self.staging, ins.partition, ins.attempt)
            info["out"] = out
            self._send(ins, {"op": "reduce", "task": ins.task, "attempt": ins.attempt,
                             "partition": ins.partition, "out": out,
                             "inputs": transport.reduce_inputs(list(ins.inputs))})

    def _staged(self, ins: scheduler.Assign, fut: Future[list[dict[str, Any]]]) -> None:
        """Called on any thread when a map input is in place: hand it to the main loop."""
        error = fut.exception()
        gen = self.slot_gen.get(ins.slot, 0)
        if error is not None:
            self.events.put((ins.slot, gen, {"ev": "failed", "attempt": ins.attempt,
                                             "error": f"staging the input failed: {error}"}))
        else:
            self.events.put((ins.slot, gen, {"ev": "staged", "attempt": ins.attempt,
                                             "pieces": fut.result()}))

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
        assert self.staging is not None
        info = self.attempt_info[ins.attempt]
        if ins.kind == scheduler.REDUCE:
            part = self.staging / paths.part_name(info["partition"])
            self.transports[ins.host].collect(info["out"], part)
        else:
            self.progress.shard_done()
        for key, value in ins.counters.items():
            name = f"{ins.kind}_{key}"
            self.counters[name] = self.counters.get(name, 0) + int(value)
        stats = self.host_stats.setdefault(ins.host, {"tasks": 0, "bytes_in": 0,
                                                      "busy_seconds": 0.0})
        stats["tasks"] += 1
        stats["bytes_in"] += int(ins.counters.get("bytes_in", 0))
        stats["busy_seconds"] += time.monotonic() - info["t0"]
        outputs = None
        if ins.kind == scheduler.MAP and self.sched is not None:
            outputs = self.sched.tasks[ins.task].outputs
        self._end_attempt(ins.attempt, "ok", counters=ins.counters, outputs=outputs)

    def _end_attempt(self, attempt: str, outcome: str, error: str | None = None,
                     counters: dict[str, int] | None = None,
                     outputs: dict[int, list[str]] | None = None) -> None:
        assert self.journal is not None
        info = self.attempt_info.get(attempt)
        if info is None or not info.get("open"):
            return
        info["open"] = False
        c = counters or {}
        self.journal.event(
            "task_end", task=info["task"], kind=info["kind"], attempt=attempt,
            host=info["host"], slot=info["slot"], outcome=outcome,
            bytes_in=int(c.get("bytes_in", 0)), bytes_out=int(c.get("bytes_out", 0)),
            records=int(c.get("records", 0)), keys=int(c.get("keys", c.get("keys_out", 0))),
            error=error, **({"outputs": outputs} if outputs is not None else {}))

    def _task_error(self, ins: scheduler.Failed, sched: scheduler.Scheduler) -> TaskError:
        task = sched.tasks[ins.task]
        where = ""
        if task.kind == scheduler.MAP:
            where = f" ({self.shards[ins.task].describe()})"
        else:
            where = f" (partition {task.partition})"
        message = (f"{task.kind} task {ins.task}{where} failed {task.failures} times; "
                   f"last on host {ins.host}: {ins.error}")
        return TaskError(message, task=ins.task, host=ins.host, shard=where.strip(" ()"),
                         detail=ins.detail)

    # --- shutdown and journal ---------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot, worker in list(self.workers.items()):
            self.slot_gen[slot] = -1
            worker.send({"op": "quit"})
        for t in self.transports.values():
            t.close()
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
            "hosts": [{"name": t.name, "address": t.name, "cores": t.cores}
                      for t in self.transports.values()],
            "shards": [{"task": s.task, **_shard_info(s), "key": resume.shard_key(s)}
                       for s in shards],
        })

    def _write_summary(self, status: str, code: int, error: str | None, seconds: float,
                       nshards: int, reducers: int) -> None:
        assert self.journal is not None
        c = self.counters
        self.summary_data = {
            "run_id": self.run_id, "job": str(self.cfg.job), "corpus": str(self.cfg.corpus),
            "output": str(self.cfg.output), "status": status, "exit_code": code,
            "started": time.time() - seconds, "ended": time.time(), "duration": seconds,
            "error": error,
            "counters": {
                "bytes_in": c.get("map_bytes_in", 0), "records_in": c.get("map_records", 0),
                "pairs": c.get("map_pairs", 0), "keys_out": c.get("reduce_keys_out", 0),
                "bytes_out": c.get("reduce_bytes_out", 0), "shuffle_bytes":
                c.get("map_bytes_out", 0), "map_tasks": nshards, "reduce_tasks": reducers,
                "spills": c.get("map_spills", 0), "retries": self.failed_attempts,
                "maps_reused": c.get("map_reused", 0),
                "backups": self.sched.backups if self.sched else 0,
                "hosts_lost": len(self.sched.lost_hosts) if self.sched else 0,
            },
            "hosts": self.host_stats,
        }
        self.journal.write_json("summary.json", self.summary_data)


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
    """SIGTERM raises Interrupted(15) in the main thread (SIGINT raises KeyboardInterrupt)."""

    def __enter__(self) -> _signals_raise:
        self._old: Callable[..., Any] | int | None = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        signal.signal(signal.SIGTERM, self._old)  # type: ignore[arg-type]
