"""The run's worker slots: which worker runs in each, its generation, its restarts.

A slot is ``host/index``. Each worker started in a slot gets the next generation; its messages
are posted with it, so the messages and the exit of a worker retired on purpose are told apart
from the current one's (fencing). A slot's workers that keep crashing give its host up.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from mapred.cluster.transport import Transport, WorkerHandle
from mapred.engine import scheduler
from mapred.engine.journal import Journal
from mapred.errors import JobError, NoHostsError
from mapred.limits import HEARTBEAT_TIMEOUT, MAX_RESPAWNS

log = logging.getLogger("mapred")

INTERNAL = 0  # generation of the runner's own queue messages (workers' start at 1)

Message = tuple[str, int, "dict[str, Any] | None"]
InitFor = Callable[[Transport], dict[str, Any]]


class WorkerPool:
    def __init__(self, transports: dict[str, Transport], events: queue.Queue[Message],
                 on_lost: Callable[[str, str], None]) -> None:
        self.transports = transports
        self.events = events
        self.on_lost = on_lost  # posts a host_lost
        self.workers: dict[str, WorkerHandle] = {}
        self.slot_host: dict[str, str] = {}
        self.slot_gen: dict[str, int] = {}  # worker generation per slot: fences retired ones
        self.slot_index: dict[str, int] = {}
        self.last_seen: dict[str, float] = {}
        self.respawns: dict[str, int] = {}
        self.ready_slots: set[str] = set()  # slots whose current worker said it is ready
        self.last_exit: dict[str, str] = {}  # slot -> why its last worker exited
        self.init_for: InitFor | None = None  # a new worker's init message
        self.journal: Journal | None = None
        self.host_out: Callable[[str], bool] = lambda host: False  # lost or excluded

    def spawn(self, t: Transport, index: int) -> None:
        slot = f"{t.name}/{index}"
        self.slot_host[slot] = t.name
        self.slot_index[slot] = index
        if self.host_out(t.name):
            return
        gen = self.slot_gen.get(slot, 0) + 1
        self.slot_gen[slot] = gen
        self.ready_slots.discard(slot)
        assert self.init_for is not None
        try:
            init = self.init_for(t)
            worker = t.spawn_worker(index, functools.partial(self._on_message, gen))
        except (JobError, NoHostsError) as e:  # the host went away under us
            self.on_lost(t.name, f"host {t.name}: cannot start a worker: {e}")
            return
        assert worker.slot == slot, (worker.slot, slot)
        self.workers[slot] = worker
        self.last_seen[slot] = time.monotonic()
        worker.send(init)
        assert self.journal is not None
        self.journal.event("worker_start", host=t.name, slot=index)

    def respawn(self, slot: str, crashed: bool = True) -> None:
        """Start a fresh worker in ``slot`` (its host is up). After MAX_RESPAWNS crashes in a
        slot with no other live worker on its host, the host is given up."""
        host = self.slot_host[slot]
        if self.host_out(host):
            return
        if crashed and self._crashed_too_often(slot, host):
            return
        self.spawn(self.transports[host], self.slot_index[slot])

    def _crashed_too_often(self, slot: str, host: str) -> bool:
        self.respawns[slot] = self.respawns.get(slot, 0) + 1
        if self.respawns[slot] <= MAX_RESPAWNS:
            return False
        if not any(self.slot_host.get(s) == host for s in self.workers):
            last = self.last_exit.get(slot, "")
            self.on_lost(host, f"workers on host {host} keep exiting "
                               f"({MAX_RESPAWNS} restarts in slot {slot})"
                               + (f"; the last: {last}" if last else ""))
        return True

    def retire(self, slot: str) -> None:
        """Kill the worker in ``slot`` on purpose: its exit and late messages are ignored."""
        self.slot_gen[slot] = self.slot_gen.get(slot, 0) + 1  # fences the old worker
        worker = self.workers.pop(slot, None)
        if worker is not None:
            worker.kill()

    def quit(self, slot: str) -> None:
        """Fence the idle worker in ``slot`` and ask it to quit (killed, it would remove its
        last task's files: a committed map's)."""
        worker = self.workers.pop(slot)
        self.slot_gen[slot] = self.slot_gen.get(slot, 0) + 1
        worker.send({"op": "quit"})

    def slots_of(self, host: str) -> list[str]:
        return [s for s, h in self.slot_host.items() if h == host]

    def current(self, slot: str, gen: int) -> bool:
        """Whether a message of generation ``gen`` is from ``slot``'s current worker (then it
        counts as a heartbeat)."""
        if gen != self.slot_gen.get(slot):
            return False
        self.last_seen[slot] = time.monotonic()
        return True

    def ready_again(self, slot: str) -> None:
        """Post a ``ready`` of ``slot``'s current worker (an attempt never reached it)."""
        self.events.put((slot, self.slot_gen[slot], {"ev": "ready", "again": True}))

    def silent(self) -> list[str]:
        """Retire the workers not heard from for HEARTBEAT_TIMEOUT; their slots."""
        now = time.monotonic()
        silent = [s for s in self.workers if now - self.last_seen.get(s, now) > HEARTBEAT_TIMEOUT]
        for slot in silent:
            self.retire(slot)
        return silent

    def exited(self, slot: str) -> scheduler.Event | None:
        """The current worker of ``slot`` ended: the scheduler's event, None if retired."""
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

    def worker_log(self, slot: str) -> str | None:
        return getattr(self.workers.get(slot), "log", None)

    def shutdown(self) -> None:
        """Fence every worker for good and ask it to quit."""
        for slot, worker in list(self.workers.items()):
            self.slot_gen[slot] = -1
            worker.send({"op": "quit"})

    def _on_message(self, gen: int, slot: str, msg: dict[str, Any] | None) -> None:
        self.events.put((slot, gen, msg))
