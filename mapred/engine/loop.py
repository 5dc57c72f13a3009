"""The run's event loop: worker messages and the runner's own (a host lost, background work
done) arrive on one queue and are handled in order on the main thread; each becomes scheduler
events, and the scheduler's instructions become I/O (through the pool and attempt I/O)."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from mapred.cluster import diagnose
from mapred.cluster.transport import Transport
from mapred.engine import scheduler
from mapred.engine.accounting import Accounts, task_error
from mapred.engine.attempts import AttemptIO
from mapred.engine.journal import Journal
from mapred.engine.pool import INTERNAL, Message, WorkerPool
from mapred.errors import JobError, JobLoadError, MapredError, NoHostsError
from mapred.jobfiles import JobFiles
from mapred.worker.fetch import fetch_error_host, lost_outputs

log = logging.getLogger("mapred")


class Shown(Protocol):
    """What the loop shows of the run's progress (``runner.Progress``)."""

    def tick(self) -> None: ...
    def phase(self, name: str) -> None: ...
    def reduce_start(self, partitions: int) -> None: ...


@dataclass
class Hosts:
    """What the loop knows of the hosts beyond the scheduler."""

    transports: dict[str, Transport]
    lost: dict[str, str]  # host -> why it was lost
    disk_full: dict[str, str]  # host -> its workdir, where a disk filled up
    disk_of: Callable[[Transport], str]


class EventLoop:
    def __init__(self, sched: scheduler.Scheduler, hosts: Hosts, pool: WorkerPool,
                 aio: AttemptIO, accounts: Accounts, journal: Journal, progress: Shown,
                 events: queue.Queue[Message], io: ThreadPoolExecutor) -> None:
        self.sched = sched
        self.hosts = hosts
        self.transports = hosts.transports
        self.lost_hosts = hosts.lost
        self.pool = pool
        self.aio = aio
        self.accounts = accounts
        self.journal = journal
        self.progress = progress
        self.events = events
        self.io = io
        self.reducers = 1
        self.deadline = 0.0  # seconds, for its message (the scheduler keeps the time)
        self.tick_seconds = 0.25
        self.job_files: JobFiles | None = None
        self.job_warnings: set[str] = set()  # shown once, not once per worker
        self.flapping_kept: set[str] = set()  # flapping, but the last usable host
        self.last_tick = 0.0

    def run(self) -> None:
        """Until the scheduler says the run is over (or an error ends it)."""
        reduce_phase = reduce_started = False
        sched = self.sched
        while not self._step():
            if reduce_phase != sched.maps_done():  # back to maps when outputs were lost
                reduce_phase = not reduce_phase
                self.journal.event("phase", phase="reduce" if reduce_phase else "map")
                self.progress.phase("reduce" if reduce_phase else "map")
                if reduce_phase and not reduce_started:
                    reduce_started = True
                    self.progress.reduce_start(self.reducers)

    def _step(self) -> bool:
        """Handle one message (or a tick); True when the run is over."""
        now = time.monotonic()
        if now - self.last_tick >= self.tick_seconds:  # even when messages never stop coming
            self.last_tick = now
            if self._tick():
                return True
        try:
            key, gen, msg = self.events.get(timeout=self.tick_seconds)
        except queue.Empty:
            return False
        if gen == INTERNAL:
            assert msg is not None
            return self._internal(key, msg)
        if self.pool.current(key, gen):
            return self._worker_message(key, msg)
        return False  # a retired worker: its messages and its exit mean nothing now

    def _tick(self) -> bool:
        self.progress.tick()
        if self.feed(scheduler.Tick()):
            return True
        for lost in self.pool.silent():
            if self.feed(scheduler.SlotLost(lost, "worker stopped responding")):
                return True
            self.pool.respawn(lost)
        return False

    def feed(self, event: scheduler.Event) -> bool:
        """Hand one event to the scheduler and carry out its instructions; True when over."""
        for ins in self.sched.handle(event, time.monotonic()):
            if self._carry_out(ins):
                return True
        return False

    # --- worker messages --------------------------------------------------------------------

    def _worker_message(self, slot: str, msg: dict[str, Any] | None) -> bool:
        """Handle one message of a current worker; True when the run is over."""
        if msg is None:
            return self._worker_exited(slot)
        ev = msg.get("ev")
        if ev == "ready":
            return self._ready(slot, msg)
        if ev == "init_failed":
            host = self.pool.slot_host[slot]
            detail = msg.get("detail")
            raise JobLoadError(self._local_text(host, msg["error"]),
                               detail=self._local_text(host, detail) if detail else None)
        if ev == "progress":
            self.aio.mapped(msg["attempt"], int(msg["bytes"]))
        elif ev == "fetched":
            self.aio.fetched(msg.get("attempt", ""), int(msg.get("bytes", 0)))
        elif ev == "done" and self.sched.is_running(slot, msg["attempt"]):
            self.aio.finish(msg)
        elif ev == "failed":
            self._failure(slot, msg)
        return False  # "alive" and unknown events only refresh the heartbeat

    def _worker_exited(self, slot: str) -> bool:
        event = self.pool.exited(slot)
        if event is None:
            return False
        if self.feed(event):
            return True
        self.pool.respawn(slot)
        return False

    def _ready(self, slot: str, msg: dict[str, Any]) -> bool:
        host = self.pool.slot_host[slot]
        self.pool.ready_slots.add(slot)
        self._warn_once([self._local_text(host, w) for w in msg.get("warnings") or []])
        if not msg.get("again"):
            self.journal.event("worker_ready", host=host, slot=self.pool.slot_index[slot])
        return self.feed(scheduler.SlotReady(slot, host))

    def _warn_once(self, warnings: list[str]) -> None:
        """The job's warnings (a parameter init never read...): every worker sends them."""
        for text in warnings:
            if text not in self.job_warnings:
                self.job_warnings.add(text)
                log.warning("%s", text, extra={"event": "job_warning"})

    def _failure(self, slot: str, msg: dict[str, Any]) -> None:
        """A worker reports a failed attempt. A reduce that could not fetch from a host waits for
        that host to answer (or be lost) before its failure counts."""
        attempt = msg["attempt"]
        host = self.pool.slot_host.get(slot, "")
        error = self._local_text(host, str(msg.get("error", "")))
        detail = msg.get("detail")
        detail = self._local_text(host, detail) if detail else detail
        source = fetch_error_host(error)
        peer = self.transports.get(source or "")
        held = {"ev": "failed", "slot": slot, "error": error, "detail": detail}
        if peer is not None and source not in self.lost_hosts and \
                self.sched.is_running(slot, attempt):
            def wait_for_peer() -> None:
                peer.probe()
                self.events.put((attempt, INTERNAL, held))
            self.io.submit(wait_for_peer)
            return
        self._attempt_failed(slot, attempt, error, detail)

    # --- the runner's own messages ----------------------------------------------------------

    def _internal(self, key: str, msg: dict[str, Any]) -> bool:
        """The runner's own messages: a host lost, background work for an attempt done."""
        ev = msg["ev"]
        if ev == "host_lost":
            return self._host_lost(key, str(msg["reason"]))
        if ev == "host_flapping":
            return self._host_flapping(key, str(msg["reason"]))
        a = self.aio.attempts.get(key)
        if a is None:
            return False
        if ev == "staged":
            ins = self.aio.on_staged(key, msg)
            return ins is not None and self.feed(
                scheduler.InputsCached(a.host, frozenset({ins.task})))
        if ev == "failed":
            if self._outputs_lost(str(msg["error"])):
                return True
            return self._attempt_failed(msg.get("slot", a.slot_id), key, str(msg["error"]),
                                        msg.get("detail"))
        if ev == "done":
            a.sums = msg.get("sums")
            return self.feed(scheduler.AttemptDone(a.slot_id, key, msg["outputs"],
                                                   msg["counters"]))
        return False

    def _outputs_lost(self, error: str) -> bool:
        """A fetch found committed map outputs missing or damaged on a host that still answers:
        those map tasks run again (the failed reduce is cancelled with the others, uncounted).
        True when the run is over."""
        for name in lost_outputs(error):
            task = self.sched.committed_output(name)
            if task is None:
                continue
            log.warning("map output %s of %s on %s is missing or damaged: %s runs again", name,
                        task.committed, task.host, task.id)
            self.journal.event("output_lost", task=task.id, host=task.host, output=name)
            if self.feed(scheduler.MapOutputLost(task.id, f"{name} missing or damaged")):
                return True
        return False

    def _attempt_failed(self, slot: str, attempt: str, error: str, detail: str | None) -> bool:
        """A failure of a running attempt: counted, logged, its files dropped, retried later."""
        if not self.sched.is_running(slot, attempt):
            return False  # fenced: it already ended (cancelled, or its host was lost)
        host = self.pool.slot_host[slot]
        self.accounts.failed_attempts += 1
        if diagnose.disk_full(error):
            self.hosts.disk_full[host] = self.hosts.disk_of(self.transports[host])
        log.warning("attempt %s failed on %s: %s", attempt, host, error,
                    extra={"event": "attempt_failed", "fields": {"attempt": attempt,
                                                                 "host": host}})
        self.aio.end(attempt, "failed", error=error, detail=detail)
        self.aio.drop_files(attempt)
        worker_log = self.pool.worker_log(slot)
        if worker_log is not None:  # where the user's print() output of that attempt went
            detail = (f"{detail}\n" if detail else "") + f"worker log (print, stderr): {worker_log}"
        return self.feed(scheduler.AttemptFailed(slot, attempt, error, detail))

    def _host_lost(self, host: str, reason: str) -> bool:
        """Give ``host`` up for the rest of the run: fence its workers, end its attempts as
        lost (not failures), tell the scheduler (its committed maps run again elsewhere)."""
        if host in self.lost_hosts or host not in self.transports:
            return False
        self.lost_hosts[host] = reason
        log.warning("%s; its work moves to the other hosts", reason,
                    extra={"event": "host_lost", "fields": {"host": host}})
        self.journal.event("host_lost", host=host, reason=reason)
        self.transports[host].lose(reason)  # it stops everything it does there (if not yet)
        for slot in self.pool.slots_of(host):
            self.pool.retire(slot)
        self.accounts.attempts_lost += self.aio.lose_host(host, reason)
        return self.feed(scheduler.HostLost(host, reason))

    def _host_flapping(self, host: str, reason: str) -> bool:
        """A host whose link keeps going down and up is excluded like a lost one (the map
        outputs it holds, which it may fail to serve, run again elsewhere) — never the last."""
        if host in self.lost_hosts or host not in self.transports:
            return False
        if not self.sched.usable_hosts() - {host}:
            if host not in self.flapping_kept:
                self.flapping_kept.add(host)
                log.warning("%s, but it is the last usable host: the run carries on with it",
                            reason, extra={"event": "host_flapping", "fields": {"host": host}})
            return False
        return self._host_lost(host, f"{reason}: excluded")

    # --- instructions -----------------------------------------------------------------------

    def _carry_out(self, ins: scheduler.Instruction) -> bool:
        """Do what the scheduler asks; True when the run is over."""
        if isinstance(ins, scheduler.Assign):
            self.aio.assign(ins)
        elif isinstance(ins, scheduler.Commit):
            self.aio.commit(ins)
        elif isinstance(ins, scheduler.Cancel):
            self._cancel(ins)
        elif isinstance(ins, scheduler.ExcludeHost):
            self._exclude(ins)
        elif isinstance(ins, scheduler.Failed):
            raise task_error(ins, self.aio.shards, self.hosts.disk_full,
                             set(self.transports) - set(self.lost_hosts))
        elif isinstance(ins, scheduler.DeadlinePassed):
            raise JobError(f"deadline of {self.deadline:g}s exceeded; run stopped")
        elif isinstance(ins, scheduler.NoHosts):
            raise NoHostsError(ins.reason)
        elif isinstance(ins, scheduler.Finished):
            return True
        return False

    def _cancel(self, ins: scheduler.Cancel) -> None:
        """Kill the losing attempt's worker, drop its files, start a fresh worker. An attempt
        still being staged never reached its worker: that worker stays and is idle again."""
        if self.aio.cancel(ins.attempt, ins.reason) and ins.slot in self.pool.workers:
            # (killing it would make it remove its last task's files: a committed map's)
            self.pool.ready_again(ins.slot)
            return
        self.pool.retire(ins.slot)
        self.aio.drop_files(ins.attempt)
        self.pool.respawn(ins.slot, crashed=False)

    def _exclude(self, ins: scheduler.ExcludeHost) -> None:
        log.warning("excluding host %s for the rest of the run: %s", ins.host, ins.reason,
                    extra={"event": "host_excluded", "fields": {"host": ins.host}})
        self.journal.event("host_excluded", host=ins.host, reason=ins.reason)
        busy = self.aio.busy_slots()
        for slot in self.pool.slots_of(ins.host):
            if slot in busy or slot not in self.pool.workers:
                self.pool.retire(slot)  # stops its attempt (which the scheduler dropped)
            else:  # idle: it quits; killed, it would remove its last (committed) task's files
                self.pool.quit(slot)

    def _local_text(self, host: str, text: str) -> str:
        """An error from ``host`` naming the job's files here, not their copies there."""
        t = self.transports.get(host)
        if t is None or self.job_files is None:
            return text
        try:
            return self.job_files.localize(text, t.job_path(self.job_files))
        except MapredError:  # the host is gone: its names will do
            return text
