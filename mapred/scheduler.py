"""The scheduler: a pure state machine, events in, instructions out.

It knows tasks, attempts and slots (one worker process on one host) and nothing of processes,
sockets or clocks: the runner feeds it events and carries out what it returns. Rules:

* map tasks first, in plan order, to whichever slot is idle (hosts pull work as they go idle, so a
  host with more cores or faster cores does more); reduce tasks once every map task is committed;
* every attempt has an id ``<task>.<n>``; an event about an attempt that is not the one running
  for its task (a late result of a lost or superseded attempt) is ignored: attempts are fenced;
* the first successful attempt of a task is committed, once; a failed attempt is retried until the
  task has failed ``max_attempts`` times, then the job fails with that attempt's error;
* a lost host loses its running attempts (not counted as failures) and its committed map outputs
  while the reduce phase still needs them: those map tasks run again elsewhere.

``check_invariants`` states what must hold after every event; the unit tests call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAP, REDUCE = "map", "reduce"


@dataclass
class Task:
    id: str
    kind: str
    partition: int = -1  # reduce tasks only
    state: str = "pending"  # pending | running | done
    attempts: int = 0  # attempts started so far (numbers the next attempt)
    failures: int = 0
    running: str | None = None  # the attempt currently running
    committed: str | None = None
    host: str | None = None  # where the committed attempt ran (and its outputs live)
    outputs: dict[int, list[str]] = field(default_factory=dict)
    last_error: tuple[str, str | None, str] | None = None  # (message, detail, host)


@dataclass
class Slot:
    id: str
    host: str
    attempt: str | None = None


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotReady:
    slot: str
    host: str


@dataclass(frozen=True)
class AttemptDone:
    slot: str
    attempt: str
    outputs: dict[int, list[str]]
    counters: dict[str, int]


@dataclass(frozen=True)
class AttemptFailed:
    slot: str
    attempt: str
    error: str
    detail: str | None = None


@dataclass(frozen=True)
class SlotLost:
    """A worker process ended unexpectedly while its host stays up; counts as a failure."""

    slot: str
    reason: str


@dataclass(frozen=True)
class HostLost:
    host: str
    reason: str


# --- instructions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    slot: str
    task: str
    kind: str
    attempt: str
    inputs: tuple[tuple[str, str], ...] = ()  # reduce: (host, run file) of every map output
    partition: int = -1


@dataclass(frozen=True)
class Commit:
    task: str
    kind: str
    attempt: str
    host: str
    counters: dict[str, int]


@dataclass(frozen=True)
class Discard:
    """Files of an attempt that will never be used; the runner removes them on ``host``."""

    host: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    pass


@dataclass(frozen=True)
class Failed:
    task: str
    host: str
    error: str
    detail: str | None


@dataclass(frozen=True)
class NoHosts:
    reason: str


Event = SlotReady | AttemptDone | AttemptFailed | SlotLost | HostLost
Instruction = Assign | Commit | Discard | Finished | Failed | NoHosts


class Scheduler:
    def __init__(self, map_tasks: list[str], reducers: int, max_attempts: int = 4,
                 hosts: list[str] | None = None) -> None:
        self.tasks: dict[str, Task] = {t: Task(t, MAP) for t in map_tasks}
        for r in range(reducers):
            tid = f"r{r:05d}"
            self.tasks[tid] = Task(tid, REDUCE, partition=r)
        self.slots: dict[str, Slot] = {}
        self.lost_hosts: set[str] = set()
        self.hosts = set(hosts or [])  # every host of the run; all lost -> NoHosts
        self.max_attempts = max_attempts
        self.over = False
        self._attempt_task: dict[str, str] = {}

    # --- queries ----------------------------------------------------------------------------

    def maps_done(self) -> bool:
        return all(t.state == "done" for t in self.tasks.values() if t.kind == MAP)

    def all_done(self) -> bool:
        return all(t.state == "done" for t in self.tasks.values())

    # --- events -----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        if self.over:
            return []
        out: list[Instruction] = []
        if isinstance(event, SlotReady):
            if event.host not in self.lost_hosts:
                self.slots[event.slot] = Slot(event.slot, event.host)
        elif isinstance(event, AttemptDone):
            self._done(event, out)
        elif isinstance(event, AttemptFailed):
            self._failed(event.slot, event.attempt, event.error, event.detail, out)
        elif isinstance(event, SlotLost):
            self._slot_lost(event, out)
        elif isinstance(event, HostLost):
            self._host_lost(event, out)
        if not self.over:
            self._schedule(out)
        return out

    def _current(self, slot_id: str, attempt: str) -> Task | None:
        """The task whose running attempt is ``attempt`` on ``slot_id``, else None (fenced)."""
        slot = self.slots.get(slot_id)
        task = self.tasks.get(self._attempt_task.get(attempt, ""))
        if slot is None or slot.attempt != attempt or task is None or task.running != attempt:
            return None
        return task

    def _done(self, ev: AttemptDone, out: list[Instruction]) -> None:
        task = self._current(ev.slot, ev.attempt)
        if task is None:
            return
        slot = self.slots[ev.slot]
        slot.attempt = None
        task.running = None
        task.state = "done"
        task.committed = ev.attempt
        task.host = slot.host
        task.outputs = dict(ev.outputs)
        out.append(Commit(task.id, task.kind, ev.attempt, slot.host, dict(ev.counters)))

    def _failed(self, slot_id: str, attempt: str, error: str, detail: str | None,
                out: list[Instruction]) -> None:
        task = self._current(slot_id, attempt)
        if task is None:
            return
        slot = self.slots[slot_id]
        slot.attempt = None
        task.running = None
        task.state = "pending"
        task.failures += 1
        task.last_error = (error, detail, slot.host)
        if task.failures >= self.max_attempts:
            self.over = True
            out.append(Failed(task.id, slot.host, error, detail))

    def _slot_lost(self, ev: SlotLost, out: list[Instruction]) -> None:
        slot = self.slots.pop(ev.slot, None)
        if slot is None:
            return
        if slot.attempt is not None:
            self.slots[ev.slot] = slot  # let _failed find it, then drop it again
            self._failed(ev.slot, slot.attempt, ev.reason, None, out)
            self.slots.pop(ev.slot, None)
        # the host is still up: the runner starts a new worker, which reports SlotReady

    def _host_lost(self, ev: HostLost, out: list[Instruction]) -> None:
        self.lost_hosts.add(ev.host)
        for sid in [s for s, slot in self.slots.items() if slot.host == ev.host]:
            slot = self.slots.pop(sid)
            if slot.attempt is not None:
                task = self.tasks[self._attempt_task[slot.attempt]]
                task.running, task.state = None, "pending"
        if not self.all_done():
            for task in self.tasks.values():
                if task.kind == MAP and task.state == "done" and task.host == ev.host:
                    task.state, task.committed, task.host, task.outputs = "pending", None, None, {}
        self._check_hosts_left(out)

    def _check_hosts_left(self, out: list[Instruction]) -> None:
        left = self.hosts - self.lost_hosts if self.hosts else set(self.slots)
        if not left and not self.all_done():
            self.over = True
            out.append(NoHosts("no usable host left: every worker was lost"))

    # --- assignment -------------------------------------------------------------------------

    def _schedule(self, out: list[Instruction]) -> None:
        if self.all_done():
            self.over = True
            out.append(Finished())
            return
        idle = [s for s in self.slots.values() if s.attempt is None]
        if not idle:
            return
        kind = MAP if not self.maps_done() else REDUCE
        pending = [t for t in self.tasks.values() if t.kind == kind and t.state == "pending"]
        for slot, task in zip(idle, pending, strict=False):
            out.append(self._start(slot, task))

    def _start(self, slot: Slot, task: Task) -> Assign:
        attempt = f"{task.id}.{task.attempts}"
        task.attempts += 1
        task.state, task.running = "running", attempt
        slot.attempt = attempt
        self._attempt_task[attempt] = task.id
        if task.kind == MAP:
            return Assign(slot.id, task.id, MAP, attempt)
        inputs = tuple(
            (m.host or "", path)
            for m in self.tasks.values()
            if m.kind == MAP
            for path in m.outputs.get(task.partition, [])
        )
        return Assign(slot.id, task.id, REDUCE, attempt, inputs, task.partition)

    # --- invariants -------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if the state is inconsistent (used by the tests)."""
        running = {}
        for task in self.tasks.values():
            if task.state == "running":
                assert task.running is not None, task
                running[task.running] = task.id
            else:
                assert task.running is None, task
            if task.state == "done":
                assert task.committed is not None and task.host is not None, task
        busy = {s.attempt: s.id for s in self.slots.values() if s.attempt is not None}
        assert set(busy) == set(running), (busy, running)
        if any(t.kind == REDUCE and t.state != "pending" for t in self.tasks.values()):
            assert self.maps_done() or self.over, "a reduce ran before every map committed"
