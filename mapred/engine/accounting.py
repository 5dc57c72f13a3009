"""What a run counts: input shown as mapped, attempts committed, failed and lost, and from those
the counters and per-host figures of the summary (tallied once, from the attempts finally
committed, so work redone after a loss is counted once)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from mapred.cluster import diagnose
from mapred.engine import scheduler
from mapred.errors import TaskError
from mapred.job import USER_COUNTER
from mapred.shards import Shard
from mapred.words import plural

log = logging.getLogger("mapred")


class Shown(Protocol):
    def advance(self, nbytes: int) -> None: ...
    def shard_done(self) -> None: ...
    def partition_done(self) -> None: ...


class Accounts:
    def __init__(self, progress: Shown) -> None:
        self.progress = progress
        self.shards: dict[str, Shard] = {}
        # attempt -> (host, counters, busy seconds) of every commit; tallied by tally
        self.committed: dict[str, tuple[str, dict[str, int], float]] = {}
        self.failed_attempts = 0
        self.attempts_lost = 0
        self.map_reused: int | None = None  # --resume: map tasks taken from the earlier run
        self.shards_done: set[str] = set()
        self.shard_bytes: dict[str, int] = {}  # task -> input bytes shown as mapped
        self.parts_done: set[int] = set()  # partitions whose part file is committed
        self.counters: dict[str, int] = {}
        self.host_stats: dict[str, dict[str, float]] = {}

    def show_mapped(self, task: str, done: int) -> None:
        shown = self.shard_bytes.get(task, 0)
        done = min(done, self.shards[task].size)
        if done > shown:
            self.shard_bytes[task] = done
            self.progress.advance(done - shown)

    def shard_committed(self, task: str) -> None:
        self.show_mapped(task, self.shards[task].size)
        if task not in self.shards_done:
            self.shards_done.add(task)
            self.progress.shard_done()

    def partition_committed(self, partition: int) -> None:
        if partition not in self.parts_done:
            self.parts_done.add(partition)
            self.progress.partition_done()

    def tally(self, sched: scheduler.Stats) -> None:
        """Counters and per-host figures of the attempts committed now (a map attempt whose
        outputs were lost with its host no longer counts: its rerun does)."""
        counters: dict[str, int] = {}
        hosts: dict[str, dict[str, float]] = {}
        current = sched.committed
        for attempt, (host, values, busy) in self.committed.items():
            kind = current.get(attempt)
            if kind is not None:
                _add(counters, kind, values)
                _add_host(hosts.setdefault(host, {"tasks": 0, "bytes_in": 0,
                                                  "busy_seconds": 0.0}), values, busy)
        if self.map_reused is not None:
            counters["map_reused"] = self.map_reused
        mapped = [self.shards[t] for t in self.shards_done if t in self.shards]
        counters["input_bytes"] = sum(s.size for s in mapped)  # as planned: on disk
        counters["input_gzip"] = int(any(p.file.gzip for s in mapped for p in s.pieces))
        self.counters, self.host_stats = counters, hosts

    def summary_counters(self, sched: scheduler.Stats, nshards: int, reducers: int,
                         hosts_lost: int) -> dict[str, Any]:
        """The ``counters`` of summary.json (after :meth:`tally`)."""
        c = self.counters
        return {
            "bytes_in": c.get("map_bytes_in", 0), "records_in": c.get("map_records", 0),
            "input_bytes": c.get("input_bytes", 0),
            "pairs": c.get("map_pairs", 0), "keys_out": c.get("reduce_keys_out", 0),
            "bytes_out": c.get("reduce_bytes_out", 0), "shuffle_bytes":
            c.get("map_bytes_out", 0), "map_tasks": sched.tasks(scheduler.MAP),
            "reduce_tasks": sched.tasks(scheduler.REDUCE),
            "map_tasks_planned": nshards, "reduce_tasks_planned": reducers,
            "spills": c.get("map_spills", 0), "retries": self.failed_attempts,
            "maps_reused": c.get("map_reused", 0),
            "backups": sched.backups,
            "hosts_lost": hosts_lost,
            "attempts_lost": self.attempts_lost,
            "maps_rerun": sched.maps_rerun,
            **user_counters(c),
        }

    def report_faults(self, sched: scheduler.Stats, lost_hosts: dict[str, str]) -> None:
        """One line after a successful run that had to recover from something."""
        if not (lost_hosts or self.failed_attempts or sched.backups):
            return
        parts = []
        if lost_hosts:
            parts.append(f"{plural(len(lost_hosts), 'host')} lost "
                         f"({', '.join(lost_hosts)}; {plural(self.attempts_lost, 'attempt')} "
                         f"lost, {plural(sched.maps_rerun, 'committed map task')} rerun)")
        if self.failed_attempts:
            parts.append(f"{plural(self.failed_attempts, 'failed attempt')} retried")
        if sched.backups:
            parts.append(f"{plural(sched.backups, 'backup attempt')} for stragglers")
        log.info("recovered: %s", "; ".join(parts), extra={"event": "recovered", "fields": {
            "hosts_lost": sorted(lost_hosts), "retries": self.failed_attempts,
            "backups": sched.backups}})


def task_error(ins: scheduler.Failed, shards: dict[str, Shard], disk_full: dict[str, str],
               usable: set[str]) -> TaskError:
    """The error a task that failed too often ends the run with. ``disk_full``: host -> its
    workdir where a disk filled up; ``usable``: the hosts not lost."""
    if ins.kind == scheduler.MAP:
        where = f" ({shards[ins.task].describe()})"
    else:
        where = f" (partition {ins.partition})"
    failed = f"{ins.kind} task {ins.task}{where} failed {plural(ins.failures, 'time')}"
    if diagnose.disk_full(ins.error) and disk_full:  # not the task's fault: the disks'
        line = diagnose.disk_full_line(disk_full, every=set(disk_full) >= usable)
        return TaskError(f"{failed}: {line}", task=ins.task, host=ins.host,
                         shard=where.strip(" ()"))
    return TaskError(f"{failed}; last on host {ins.host}: {ins.error}", task=ins.task,
                     host=ins.host, shard=where.strip(" ()"), detail=ins.detail)


def user_counters(counters: dict[str, int]) -> dict[str, int]:
    """``user.NAME`` -> total of the job's own counters (ctx.count) over committed tasks."""
    prefix = f"{scheduler.MAP}_{USER_COUNTER}"
    return {k[len(scheduler.MAP) + 1:]: v for k, v in sorted(counters.items())
            if k.startswith(prefix)}


def _add(counters: dict[str, int], kind: str, values: dict[str, int]) -> None:
    for key, value in values.items():
        name = f"{kind}_{key}"
        counters[name] = counters.get(name, 0) + int(value)


def _add_host(stats: dict[str, float], values: dict[str, int], busy: float) -> None:
    stats["tasks"] += 1
    stats["bytes_in"] += int(values.get("bytes_in", 0))
    stats["busy_seconds"] += busy
