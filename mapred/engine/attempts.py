"""Attempt I/O: start an attempt on its worker, check or collect what it wrote, commit or drop it.

Each attempt has one typed record (:class:`Attempt`); ``task_start`` and ``task_end`` in the
journal are written from it. Slow work (staging a shard, checking map outputs, collecting a part
file) runs on other threads and posts its outcome (``staged``, ``done``, ``failed``) to the loop.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.cluster.transport import Staged, Transport
from mapred.engine import scheduler
from mapred.engine.accounting import Accounts
from mapred.engine.collect import PartFiles
from mapred.engine.journal import Journal, attempt_times, now
from mapred.engine.pool import WorkerPool
from mapred.errors import JobError, MapredError
from mapred.shards import Shard

log = logging.getLogger("mapred")

Post = Callable[[str, dict[str, Any]], None]


@dataclass
class Attempt:
    task: str
    kind: str
    attempt: str
    host: str
    slot: int
    slot_id: str
    backup: bool
    t0: float
    open: bool = True
    shard: dict[str, Any] | None = None
    staging: dict[str, Any] | None = None  # {start, end, how...} of a map's input
    partition: int | None = None
    out: str | None = None  # a reduce's part file on its host
    fetched: dict[str, Any] | None = None  # {end, bytes}: its reduce inputs fetched
    reported: float | None = None  # ts its worker said it was done
    maxrss: Any = None
    mapped: int = 0
    sums: dict[str, list[Any]] | None = None

    def start_fields(self) -> dict[str, Any]:
        """The fields of its ``task_start``."""
        out = {"task": self.task, "kind": self.kind, "attempt": self.attempt, "host": self.host,
               "slot": self.slot, "backup": self.backup, "slot_id": self.slot_id}
        if self.kind == scheduler.MAP:
            return {**out, "shard": self.shard, "staging": self.staging}
        return {**out, "partition": self.partition}

    def times(self) -> dict[str, Any]:
        info = {k: v for k, v in (("fetched", self.fetched), ("reported", self.reported),
                                  ("staging", self.staging)) if v is not None}
        return attempt_times(info)


def shard_info(shard: Shard) -> dict[str, Any]:
    """How the journal shows a shard: its first file and byte range, and its file count."""
    first = shard.pieces[0]
    end = first.end if len(shard.pieces) == 1 else shard.pieces[-1].end
    return {"path": first.file.rel, "start": first.start, "end": end,
            "files": len(shard.pieces), "bytes": shard.size}


class AttemptIO:
    def __init__(self, transports: dict[str, Transport], pool: WorkerPool, journal: Journal,
                 accounts: Accounts, shards: dict[str, Shard], io: ThreadPoolExecutor,
                 post: Post) -> None:
        self.transports = transports
        self.pool = pool
        self.journal = journal
        self.accounts = accounts
        self.shards = shards
        self.io = io
        self.post = post
        self.attempts: dict[str, Attempt] = {}
        self.pending: dict[str, scheduler.Assign] = {}  # map attempts being staged
        self.stage_futures: dict[str, Future[Staged]] = {}
        self.staging: Path | None = None
        self.parts: PartFiles | None = None  # the reduce attempts' part files
        self.lost_hosts: dict[str, str] = {}

    # --- starting ---------------------------------------------------------------------------

    def assign(self, ins: scheduler.Assign) -> None:
        host = self.pool.slot_host[ins.slot]
        a = Attempt(ins.task, ins.kind, ins.attempt, host, int(ins.slot.rsplit("/", 1)[1]),
                    ins.slot, ins.backup, time.monotonic())
        self.attempts[ins.attempt] = a
        try:
            if ins.kind == scheduler.MAP:
                self._stage(ins, a)
            else:
                self._reduce(ins, a)
        except MapredError as e:  # a failure of this attempt, not of the run
            self.post(ins.attempt, {"ev": "failed", "error": f"starting it failed: {e}"})

    def _stage(self, ins: scheduler.Assign, a: Attempt) -> None:
        self.pending[ins.attempt] = ins
        shard = self.shards[ins.task]
        a.shard = shard_info(shard)
        a.staging = {"start": now()}  # task_start carries it, with its end
        fut = self.transports[a.host].prepare(shard)
        self.stage_futures[ins.attempt] = fut
        fut.add_done_callback(functools.partial(self._staged, ins.attempt))

    def _reduce(self, ins: scheduler.Assign, a: Attempt) -> None:
        assert self.staging is not None
        transport = self.transports[a.host]
        a.partition = ins.partition
        a.out = out = transport.reduce_output(self.staging, ins.partition, ins.attempt)
        self._send(ins, {"op": "reduce", "task": ins.task, "attempt": ins.attempt,
                         "partition": ins.partition, "out": out,
                         "inputs": transport.reduce_inputs(list(ins.inputs))})

    def _staged(self, attempt: str, fut: Future[Staged]) -> None:
        """Called on any thread when a map input is in place (or not): post it to the loop."""
        if fut.cancelled():
            return  # the attempt ended already
        error = fut.exception()
        if error is not None:
            self.post(attempt, {"ev": "failed", "error": f"staging the input failed: {error}"})
        else:
            staged = fut.result()
            self.post(attempt, {"ev": "staged", "pieces": staged.pieces,
                                "staging": {"end": now(), **staged.journal()}})

    def on_staged(self, attempt: str, msg: dict[str, Any]) -> scheduler.Assign | None:
        """A map input is in place: send the map request; its assignment (None if it ended)."""
        self.stage_futures.pop(attempt, None)
        ins = self.pending.pop(attempt, None)
        if ins is not None:
            a = self.attempts[attempt]
            assert a.staging is not None
            a.staging.update(msg["staging"])
            self._send(ins, {"op": "map", "task": ins.task, "attempt": ins.attempt,
                             "pieces": msg["pieces"]})
        return ins

    def _send(self, ins: scheduler.Assign, msg: dict[str, Any]) -> None:
        a = self.attempts[ins.attempt]
        a.t0 = time.monotonic()
        self.journal.event("task_start", **a.start_fields())
        worker = self.pool.workers.get(ins.slot)
        if worker is not None:
            worker.send(msg)

    # --- what workers report ----------------------------------------------------------------

    def fetched(self, attempt: str, nbytes: int) -> None:
        a = self.attempts.get(attempt)
        if a is not None:
            a.fetched = {"end": now(), "bytes": nbytes}

    def finish(self, msg: dict[str, Any]) -> None:
        """A worker finished an attempt: check its map outputs, or collect its part file, on
        another thread; the attempt commits when that is done (``done`` posted)."""
        attempt = msg["attempt"]
        a = self.attempts[attempt]
        a.maxrss = msg.get("maxrss")  # the worker's peak RSS so far, journaled
        t = self.transports[a.host]
        outputs = {int(p): list(v) for p, v in msg.get("outputs", {}).items()}
        done = {"ev": "done", "outputs": outputs, "counters": msg.get("counters", {})}
        if a.kind == scheduler.MAP:
            files = [p for runs in outputs.values() for p in runs]
            if not files:
                self.post(attempt, done)
                return
            a.reported = now()  # the journal shows the check
            self.io.submit(self._check_outputs, attempt, t.checksums, files, done)
        else:
            assert self.parts is not None and a.out is not None and a.partition is not None
            a.reported = now()  # the journal shows the collect
            self.parts.collect(attempt, t, a.out, a.partition, done)

    def _check_outputs(self, attempt: str, checksums: Callable[[list[str]], dict[str, Any]],
                       files: list[str], done: dict[str, Any]) -> None:
        try:
            sums = checksums(files)
            missing = [p for p in files if p not in sums]
            if missing:
                raise JobError(f"map output {missing[0]} is missing")
        except Exception as e:  # noqa: BLE001 - a failure of the attempt
            self.post(attempt, {"ev": "failed", "error": f"checking its map outputs failed: {e}"})
            return
        self.post(attempt, {**done, "sums": {p: list(sums[p]) for p in files}})

    def mapped(self, attempt: str, nbytes: int) -> None:
        """A map attempt read ``nbytes`` more: the bar shows each shard's furthest attempt."""
        a = self.attempts.get(attempt)
        if a is None or a.kind != scheduler.MAP or a.task not in self.shards:
            return
        a.mapped += nbytes
        self.accounts.show_mapped(a.task, a.mapped)

    # --- ending -----------------------------------------------------------------------------

    def commit(self, ins: scheduler.Commit) -> None:
        """The attempt's results become the task's: its part file takes its final name, or its
        map outputs are marked to be kept (for --resume). Counters are tallied from commits."""
        a = self.attempts[ins.attempt]
        outputs = None
        if ins.kind == scheduler.REDUCE:
            assert self.parts is not None and a.partition is not None
            self.parts.commit(ins.attempt, a.partition)
            self.accounts.partition_committed(a.partition)
        else:
            self.accounts.shard_committed(ins.task)
            outputs = ins.outputs
            t = self.transports[ins.host]
            t.keep([str(paths.map_attempt_dir(Path(t.scratch), ins.attempt))])
        self.accounts.committed[ins.attempt] = (ins.host, dict(ins.counters),
                                                time.monotonic() - a.t0)
        self.end(ins.attempt, "ok", counters=ins.counters, outputs=outputs, sums=a.sums)

    def cancel(self, attempt: str, reason: str) -> bool:
        """End a losing attempt; whether it was still being staged (never reached its worker)."""
        fut = self.stage_futures.pop(attempt, None)
        if fut is not None:
            fut.cancel()
        self.end(attempt, "killed", error=reason)
        return self.pending.pop(attempt, None) is not None

    def lose_host(self, host: str, reason: str) -> int:
        """End the open attempts on ``host`` as lost; how many there were."""
        lost = [a for a in self.attempts.values() if a.open and a.host == host]
        for a in lost:
            self.pending.pop(a.attempt, None)
            fut = self.stage_futures.pop(a.attempt, None)
            if fut is not None:
                fut.cancel()
            self.end(a.attempt, "lost", error=reason)
        return len(lost)

    def busy_slots(self) -> set[str]:
        return {a.slot_id for a in self.attempts.values() if a.open}

    def end(self, attempt: str, outcome: str, error: str | None = None,
            counters: dict[str, int] | None = None, outputs: dict[int, list[str]] | None = None,
            sums: dict[str, list[Any]] | None = None, detail: str | None = None) -> None:
        a = self.attempts.get(attempt)
        if a is None or not a.open:
            return
        a.open = False
        if outcome != "ok" and a.kind == scheduler.REDUCE and self.parts is not None:
            assert a.partition is not None
            self.parts.fence(attempt, a.partition)  # its part file must never land
        c = counters or {}
        self.journal.event(
            "task_end", task=a.task, kind=a.kind, attempt=attempt, host=a.host, slot=a.slot,
            outcome=outcome, bytes_in=int(c.get("bytes_in", 0)),
            bytes_out=int(c.get("bytes_out", 0)), records=int(c.get("records", 0)),
            keys=int(c.get("keys", c.get("keys_out", 0))), error=error,
            **({"outputs": outputs} if outputs is not None else {}),
            **({"sums": sums} if sums else {}), **({"detail": detail} if detail else {}),
            **({"maxrss": a.maxrss} if a.maxrss else {}), **a.times())

    def drop_files(self, attempt: str) -> None:
        """Remove what an attempt that will never commit wrote (its map dir, its part file)."""
        a = self.attempts.get(attempt)
        if a is None or a.host in self.lost_hosts:
            return  # nothing reaches a lost host any more; its agent removes the run's scratch
        transport = self.transports[a.host]
        try:
            if a.kind == scheduler.MAP:
                transport.remove([str(paths.map_attempt_dir(Path(transport.scratch), attempt))])
            elif a.out is not None:
                transport.remove([a.out])
        except MapredError as e:
            log.debug("cannot remove the files of %s on %s: %s", attempt, a.host, e)
