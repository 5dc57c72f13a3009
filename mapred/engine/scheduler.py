"""The scheduler: a pure state machine, events in, instructions out.

It knows tasks, attempts and slots (one worker process on one host) and nothing of processes,
sockets or clocks: the runner feeds it events stamped with the time and carries out what it
returns. Rules:

* map tasks first, in plan order, to whichever slot is idle (hosts pull work as they go idle, so a
  host with more cores or faster cores does more); reduce tasks once every map task is committed;
* locality: an idle slot first takes a pending map task whose input its host already holds
  (``InputsCached``: the runner says which shards a host has in its cache). A slot whose host
  holds none of the pending inputs never waits: it takes a task whose input no host holds, else
  one held by the host with the most such work left per slot; no slot stays idle while a task it
  may run is pending;
* every attempt has an id ``<task>.<n>``; an event about an attempt that is not running for its
  task (a late result of a lost, cancelled or superseded attempt) is ignored: attempts are fenced;
* the first successful attempt of a task is committed, once; its other running attempts are
  cancelled; a failed attempt is retried after an exponential backoff with jitter until the task
  has failed ``max_attempts`` times, then the job fails with that attempt's error;
* a host on which attempts of ``exclude_after`` different tasks failed is excluded for the rest of
  the run, unless it is the last usable host;
* speculation: when a slot is idle and nothing is pending, the longest-running task of the phase
  that has run for more than ``speculate_factor`` times the median committed duration gets one
  backup attempt, preferably on another host;
* a lost host loses its running attempts (not counted as failures) and its committed map outputs
  while the reduce phase still needs them: those map tasks run again elsewhere, and reduce
  attempts running on their old outputs are cancelled. A lost host never comes back: its
  ``SlotReady`` events are ignored for the rest of the run; when no usable host is left the run
  ends with ``NoHosts``;
* a committed map output found missing or damaged (``MapOutputLost``, from a reducer's fetch)
  makes that map task run again, like a lost host's, without counting against any attempt limit.

``check_invariants`` states what must hold after every event; the unit tests call it.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Iterable
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
    failed_on: set[str] = field(default_factory=set)  # hosts where an attempt of it failed
    cached_on: set[str] = field(default_factory=set)  # map: hosts that hold its input already
    running: dict[str, str] = field(default_factory=dict)  # attempt -> slot
    not_before: float = 0.0  # backoff: no new attempt before this time
    committed: str | None = None
    host: str | None = None  # where the committed attempt ran (and its outputs live)
    outputs: dict[int, list[str]] = field(default_factory=dict)
    seconds: float = 0.0  # duration of the committed attempt


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


@dataclass(frozen=True)
class MapOutputLost:
    """A committed map task's output is missing or damaged (its host is up): run it again."""

    task: str
    reason: str


@dataclass(frozen=True)
class InputsCached:
    """``host`` holds the inputs of these map tasks (in its shard cache): its free slots take
    them first. Placement only: a task runs correctly anywhere."""

    host: str
    tasks: frozenset[str]


@dataclass(frozen=True)
class Tick:
    """Time passes: backoffs expire, stragglers become visible."""


@dataclass(frozen=True)
class Preloaded:
    """A map task committed by an earlier run (resume): its outputs live on ``host``."""

    task: str
    host: str
    outputs: dict[int, list[str]]


# --- instructions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    slot: str
    task: str
    kind: str
    attempt: str
    inputs: tuple[tuple[str, str], ...] = ()  # reduce: (host, run file) of every map output
    partition: int = -1
    backup: bool = False


@dataclass(frozen=True)
class Commit:
    task: str
    kind: str
    attempt: str
    host: str
    counters: dict[str, int]
    outputs: dict[int, list[str]] = field(default_factory=dict)  # a map's, by partition


@dataclass(frozen=True)
class Cancel:
    """Stop ``attempt`` on ``slot`` (its worker is replaced) and drop its files."""

    slot: str
    attempt: str
    reason: str


@dataclass(frozen=True)
class ExcludeHost:
    host: str
    reason: str


@dataclass(frozen=True)
class Finished:
    pass


@dataclass(frozen=True)
class Failed:
    """A task failed ``max_attempts`` times: the run ends with its last attempt's error."""

    task: str
    host: str
    error: str
    detail: str | None
    kind: str = field(default=MAP, compare=False)
    failures: int = field(default=0, compare=False)
    partition: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class DeadlinePassed:
    """The run's deadline (``Policy.deadline_at``) has passed (seen on a ``Tick``): it stops."""


@dataclass(frozen=True)
class NoHosts:
    reason: str


Event = (SlotReady | AttemptDone | AttemptFailed | SlotLost | HostLost | MapOutputLost | Tick
         | Preloaded | InputsCached)
Instruction = (Assign | Commit | Cancel | ExcludeHost | Finished | Failed | NoHosts
               | DeadlinePassed)


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 4
    backoff: float = 0.5  # seconds before the first retry; doubles, with +-50% jitter
    backoff_cap: float = 30.0
    exclude_after: int = 3  # distinct failed tasks that exclude a host
    speculation: bool = True
    speculate_factor: float = 1.5
    speculate_min: float = 2.0  # seconds an attempt must run before it gets a backup
    deadline_at: float | None = None  # on the events' clock: past it, the run stops


@dataclass(frozen=True)
class Stats:
    """What the run's summary takes from the scheduler."""

    committed: dict[str, str] = field(default_factory=dict)  # attempt -> kind, per task
    backups: int = 0
    maps_rerun: int = 0

    def tasks(self, kind: str) -> int:
        """Tasks of ``kind`` committed."""
        return sum(1 for k in self.committed.values() if k == kind)


class Scheduler:
    def __init__(self, map_tasks: list[str], reducers: int, max_attempts: int = 4,
                 hosts: list[str] | None = None, policy: Policy | None = None) -> None:
        self.policy = policy or Policy(max_attempts=max_attempts)
        self.tasks: dict[str, Task] = {t: Task(t, MAP) for t in map_tasks}
        for r in range(reducers):
            tid = f"r{r:05d}"
            self.tasks[tid] = Task(tid, REDUCE, partition=r)
        self.slots: dict[str, Slot] = {}
        self.hosts = set(hosts or [])  # every host of the run; all lost -> NoHosts
        self.lost_hosts: set[str] = set()
        self.excluded: set[str] = set()
        self.host_failed_tasks: dict[str, set[str]] = {}
        self.over = False
        self.now = 0.0
        self._attempt_task: dict[str, str] = {}
        self.started_at: dict[str, float] = {}
        self.backups = 0
        self.maps_rerun = 0  # committed map tasks run again because their host was lost

    # --- queries ----------------------------------------------------------------------------

    def maps_done(self) -> bool:
        return all(t.state == "done" for t in self.tasks.values() if t.kind == MAP)

    def all_done(self) -> bool:
        return all(t.state == "done" for t in self.tasks.values())

    def is_running(self, slot: str, attempt: str) -> bool:
        """Whether ``attempt`` is a running attempt on ``slot`` (else its results are fenced)."""
        return self._current(slot, attempt) is not None

    def stats(self) -> Stats:
        return Stats({t.committed: t.kind for t in self.tasks.values() if t.committed},
                     self.backups, self.maps_rerun)

    def committed_output(self, name: str) -> Task | None:
        """The committed map task one of whose output files is named ``name``, if any."""
        task = self.tasks.get(name.split(".", 1)[0])
        if task is None or task.state != "done" or not any(
                p.endswith("/" + name) for ps in task.outputs.values() for p in ps):
            return None
        return task

    def usable_hosts(self) -> set[str]:
        known = self.hosts or {s.host for s in self.slots.values()}
        return known - self.lost_hosts - self.excluded

    # --- events -----------------------------------------------------------------------------

    def handle(self, event: Event, now: float = 0.0) -> list[Instruction]:
        self.now = max(self.now, now)
        if self.over:
            return []
        deadline = self.policy.deadline_at
        if isinstance(event, Tick) and deadline is not None and self.now > deadline:
            self.over = True
            return [DeadlinePassed()]
        out: list[Instruction] = []
        if isinstance(event, SlotReady):
            if event.host not in self.lost_hosts and event.host not in self.excluded:
                self.slots[event.slot] = Slot(event.slot, event.host)
        elif isinstance(event, AttemptDone):
            self._done(event, out)
        elif isinstance(event, AttemptFailed):
            self._failed(event.slot, event.attempt, event.error, event.detail, out)
        elif isinstance(event, SlotLost):
            self._slot_lost(event, out)
        elif isinstance(event, HostLost):
            self._host_lost(event, out)
        elif isinstance(event, MapOutputLost):
            self._output_lost(event, out)
        elif isinstance(event, Preloaded):
            self._preloaded(event)
        elif isinstance(event, InputsCached):
            for tid in event.tasks:
                if tid in self.tasks and self.tasks[tid].kind == MAP:
                    self.tasks[tid].cached_on.add(event.host)
        if not self.over:
            self._schedule(out)
        return out

    def _current(self, slot_id: str, attempt: str) -> Task | None:
        """The task for which ``attempt`` is running on ``slot_id``, else None (fenced)."""
        slot = self.slots.get(slot_id)
        task = self.tasks.get(self._attempt_task.get(attempt, ""))
        if slot is None or slot.attempt != attempt or task is None:
            return None
        return task if task.running.get(attempt) == slot_id else None

    def _release(self, task: Task, attempt: str) -> None:
        slot = self.slots.get(task.running.pop(attempt, ""))
        if slot is not None and slot.attempt == attempt:
            slot.attempt = None
        if not task.running and task.state == "running":
            task.state = "pending"

    def _done(self, ev: AttemptDone, out: list[Instruction]) -> None:
        task = self._current(ev.slot, ev.attempt)
        if task is None:
            return
        slot = self.slots[ev.slot]
        self._release(task, ev.attempt)
        task.state, task.committed, task.host = "done", ev.attempt, slot.host
        task.outputs = dict(ev.outputs)
        task.seconds = self.now - self.started_at.get(ev.attempt, self.now)
        out.append(Commit(task.id, task.kind, ev.attempt, slot.host, dict(ev.counters),
                          dict(task.outputs)))
        for other, other_slot in list(task.running.items()):
            self._release(task, other)
            self.slots.pop(other_slot, None)  # its worker is replaced: a new SlotReady comes
            out.append(Cancel(other_slot, other, f"{ev.attempt} finished first"))

    def _failed(self, slot_id: str, attempt: str, error: str, detail: str | None,
                out: list[Instruction]) -> None:
        task = self._current(slot_id, attempt)
        if task is None:
            return
        host = self.slots[slot_id].host
        self._release(task, attempt)
        task.failures += 1
        task.failed_on.add(host)
        if task.failures >= self.policy.max_attempts:
            self.over = True
            out.append(Failed(task.id, host, error, detail, task.kind, task.failures,
                              task.partition))
            return
        task.not_before = self.now + self._backoff(task)
        self.host_failed_tasks.setdefault(host, set()).add(task.id)
        self._maybe_exclude(host, out)

    def _backoff(self, task: Task) -> float:
        base = min(self.policy.backoff_cap, self.policy.backoff * 2 ** (task.failures - 1))
        digest = hashlib.sha256(f"{task.id}.{task.failures}".encode()).digest()
        jitter = 0.5 + digest[0] / 255  # deterministic: 0.5 .. 1.5
        return base * jitter

    def _maybe_exclude(self, host: str, out: list[Instruction]) -> None:
        failed = self.host_failed_tasks.get(host, set())
        if len(failed) < self.policy.exclude_after or host in self.excluded:
            return
        if self.usable_hosts() - {host} == set():
            return  # never exclude the last host: the tasks' own attempt limits decide
        self.excluded.add(host)
        out.append(ExcludeHost(host, f"attempts of {len(failed)} different tasks failed there"))
        self._drop_host(host)

    def _slot_lost(self, ev: SlotLost, out: list[Instruction]) -> None:
        slot = self.slots.get(ev.slot)
        if slot is None:
            return
        if slot.attempt is not None:
            self._failed(ev.slot, slot.attempt, ev.reason, None, out)
        self.slots.pop(ev.slot, None)
        # the host is still up: the runner starts a new worker, which reports SlotReady

    def _host_lost(self, ev: HostLost, out: list[Instruction]) -> None:
        if ev.host in self.lost_hosts:
            return
        self.lost_hosts.add(ev.host)
        self._drop_host(ev.host)
        if not self.all_done():
            lost = [t for t in self.tasks.values()
                    if t.kind == MAP and t.state == "done" and t.host == ev.host]
            self._rerun(lost, f"map outputs lost with {ev.host}", out)
        if not self.usable_hosts() and not self.all_done():
            self.over = True
            out.append(NoHosts(f"no usable host left: {ev.host} was the last ({ev.reason})"))

    def _output_lost(self, ev: MapOutputLost, out: list[Instruction]) -> None:
        task = self.tasks.get(ev.task)
        if task is not None and task.kind == MAP and task.state == "done" and \
                not self.all_done():
            self._rerun([task], f"output of {ev.task} lost: {ev.reason}", out)

    def _rerun(self, maps: list[Task], why: str, out: list[Instruction]) -> None:
        """Committed map tasks whose outputs are gone run again; reduces running on their old
        outputs are cancelled (they start over once the maps commit again)."""
        for task in maps:
            task.state, task.committed, task.host, task.outputs = "pending", None, None, {}
            task.not_before = 0.0
            self.maps_rerun += 1
        if not maps:
            return
        for task in self.tasks.values():
            if task.kind == REDUCE:
                for attempt, slot in list(task.running.items()):
                    self._release(task, attempt)
                    self.slots.pop(slot, None)
                    out.append(Cancel(slot, attempt, why))

    def _drop_host(self, host: str) -> None:
        """Forget the host's slots; their running attempts end without counting as failures."""
        for sid in [s for s, slot in self.slots.items() if slot.host == host]:
            slot = self.slots.pop(sid)
            if slot.attempt is not None:
                task = self.tasks[self._attempt_task[slot.attempt]]
                task.running.pop(slot.attempt, None)
                if not task.running and task.state == "running":
                    task.state = "pending"

    def _preloaded(self, ev: Preloaded) -> None:
        task = self.tasks[ev.task]
        task.state, task.committed, task.host = "done", f"{ev.task}.resumed", ev.host
        task.outputs = dict(ev.outputs)

    # --- assignment -------------------------------------------------------------------------

    def _schedule(self, out: list[Instruction]) -> None:
        if self.all_done():
            self.over = True
            out.append(Finished())
            return
        kind = MAP if not self.maps_done() else REDUCE
        idle = [s for s in self.slots.values() if s.attempt is None]
        pending = [t for t in self.tasks.values() if t.kind == kind and t.state == "pending"
                   and t.not_before <= self.now]
        usable = self.usable_hosts()
        if kind == MAP:
            pending = self._place_local(idle, pending, usable, out)
        for task in pending:
            if not idle:
                break
            # a retry goes to a host where the task has not failed yet, while there is one;
            # a reduce goes where most of its input already is
            fits = [s for s in idle if _fits(s, task, usable)]
            if not fits:
                continue
            slot = fits[0]
            if kind == REDUCE and len(fits) > 1:
                slot = max(fits, key=_local_inputs(self.tasks.values(), task))
            idle.remove(slot)
            out.append(self._start(slot, task))
        if idle and self.policy.speculation and not any(
                t.kind == kind and t.state == "pending" for t in self.tasks.values()):
            self._speculate(kind, idle, out)

    def _place_local(self, idle: list[Slot], pending: list[Task], usable: set[str],
                     out: list[Instruction]) -> list[Task]:
        """Start on each idle slot the first pending map task whose input its host holds; return
        the tasks left, in the order other slots should take them: inputs no usable host holds
        first (they must be sent anyway), then those of the hosts with the most held work left
        per slot (the host least likely to get to them itself); plan order otherwise."""
        left = list(pending)
        for slot in list(idle):
            task = next((t for t in left if slot.host in t.cached_on
                         and _fits(slot, t, usable)), None)
            if task is not None:
                idle.remove(slot)
                left.remove(task)
                out.append(self._start(slot, task))
        return _backlog_order(left, self.slots.values(), usable) if idle else left

    def _speculate(self, kind: str, idle: list[Slot], out: list[Instruction]) -> None:
        done = [t.seconds for t in self.tasks.values() if t.kind == kind and t.state == "done"]
        if not done:
            return
        limit = max(self.policy.speculate_min,
                    self.policy.speculate_factor * statistics.median(done))
        candidates = sorted(
            ((self.started_at[a], t.id) for t in self.tasks.values()
             if t.kind == kind and t.state == "running" and len(t.running) == 1
             for a in t.running if self.now - self.started_at[a] > limit),
        )
        for _, tid in candidates:
            task = self.tasks[tid]
            if not idle:
                return
            (first_slot,) = task.running.values()
            first_host = self.slots[first_slot].host if first_slot in self.slots else ""
            # another host first, one holding the task's input if there is one
            idle.sort(key=lambda s: (s.host == first_host, s.host not in task.cached_on))
            out.append(self._start(idle.pop(0), task, backup=True))
            self.backups += 1

    def _start(self, slot: Slot, task: Task, backup: bool = False) -> Assign:
        attempt = f"{task.id}.{task.attempts}"
        task.attempts += 1
        task.state = "running"
        task.running[attempt] = slot.id
        slot.attempt = attempt
        self._attempt_task[attempt] = task.id
        self.started_at[attempt] = self.now
        if task.kind == MAP:
            return Assign(slot.id, task.id, MAP, attempt, backup=backup)
        inputs = tuple(
            (m.host or "", path)
            for m in self.tasks.values()
            if m.kind == MAP
            for path in m.outputs.get(task.partition, [])
        )
        return Assign(slot.id, task.id, REDUCE, attempt, inputs, task.partition, backup)

    # --- invariants -------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if the state is inconsistent (used by the tests)."""
        _check_invariants(self)


def _fits(slot: Slot, task: Task, usable: set[str]) -> bool:
    """Whether ``slot`` may run ``task``: not where it failed, unless it failed everywhere."""
    return slot.host not in task.failed_on or usable <= task.failed_on


def _backlog_order(left: list[Task], slots: Iterable[Slot], usable: set[str]) -> list[Task]:
    """Pending map tasks in the order slots holding none of them should take them: inputs no
    usable host holds first, then those of the hosts with the most held work left per slot."""
    per_host: dict[str, int] = {}
    for s in slots:
        per_host[s.host] = per_host.get(s.host, 0) + 1
    backlog: dict[str, int] = {}
    for t in left:
        for h in t.cached_on & usable:
            backlog[h] = backlog.get(h, 0) + 1

    def order(t: Task) -> float:
        holders = t.cached_on & usable
        return -max(backlog[h] / per_host.get(h, 1) for h in holders) if holders else -1e18

    return sorted(left, key=order)


def _local_inputs(tasks: Iterable[Task], task: Task) -> Callable[[Slot], int]:
    """How many of the reduce ``task``'s input files a slot's host holds (ties: first slot)."""
    held: dict[str, int] = {}
    for m in tasks:
        if m.kind == MAP and m.host is not None:
            held[m.host] = held.get(m.host, 0) + len(m.outputs.get(task.partition, []))
    return lambda slot: held.get(slot.host, 0)


def _check_invariants(self: Scheduler) -> None:
    running: dict[str, str] = {}
    for task in self.tasks.values():
        assert (task.state == "running") == bool(task.running), task
        running.update(task.running)
        if task.state == "done":
            assert task.committed is not None and task.host is not None, task
        assert len(task.running) <= 2, task  # at most one backup
    busy = {s.attempt: s.id for s in self.slots.values() if s.attempt is not None}
    assert busy == running, (busy, running)
    if any(t.kind == REDUCE and t.state == "running" for t in self.tasks.values()):
        assert self.maps_done() or self.over, "a reduce ran before every map committed"
    assert not any(s.host in self.excluded | self.lost_hosts for s in self.slots.values())
    if not self.over:  # no slot is idle while a task it may run is pending
        kind = MAP if not self.maps_done() else REDUCE
        usable = self.usable_hosts()
        for slot in self.slots.values():
            assert slot.attempt is not None or not any(
                t.kind == kind and t.state == "pending" and t.not_before <= self.now
                and _fits(slot, t, usable) for t in self.tasks.values()), slot
