"""The scheduler as a pure state machine: events in, instructions out, invariants after each."""

from __future__ import annotations

import random

from mapred import scheduler as s


class Harness:
    def __init__(self, maps: int, reducers: int, max_attempts: int = 4) -> None:
        self.sched = s.Scheduler([f"m{i:05d}" for i in range(maps)], reducers, max_attempts)
        self.out: list[s.Instruction] = []

    def feed(self, event: s.Event) -> list[s.Instruction]:
        got = self.sched.handle(event)
        self.sched.check_invariants()
        self.out += got
        return got

    def assigns(self, got: list[s.Instruction]) -> list[s.Assign]:
        return [i for i in got if isinstance(i, s.Assign)]

    def done(self, a: s.Assign, host: str = "h") -> list[s.Instruction]:
        outputs = {0: [f"{a.attempt}/p0"], 1: [f"{a.attempt}/p1"]} if a.kind == s.MAP else {}
        return self.feed(s.AttemptDone(a.slot, a.attempt, outputs, {"bytes_in": 1}))


def test_maps_then_reduces_then_finished():
    h = Harness(maps=3, reducers=2)
    first = h.assigns(h.feed(s.SlotReady("h/0", "h")) + h.feed(s.SlotReady("h/1", "h")))
    assert [a.task for a in first] == ["m00000", "m00001"]
    queue = list(first)
    reduces = []
    while queue:
        a = queue.pop(0)
        got = h.done(a)
        assert any(isinstance(i, s.Commit) and i.attempt == a.attempt for i in got)
        new = h.assigns(got)
        if a.kind == s.REDUCE or any(n.kind == s.REDUCE for n in new):
            assert h.sched.maps_done()
        reduces += [n for n in new if n.kind == s.REDUCE]
        queue += new
    assert sorted(r.partition for r in reduces) == [0, 1]
    r0 = next(r for r in reduces if r.partition == 0)
    assert sorted(p for _, p in r0.inputs) == [f"m0000{i}.0/p0" for i in range(3)]
    assert isinstance(h.out[-1], s.Finished)


def test_failed_attempt_is_retried_then_fails_the_job():
    h = Harness(maps=1, reducers=1, max_attempts=3)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    for n in range(1, 3):
        got = h.feed(s.AttemptFailed("h/0", a.attempt, "boom", "tb"))
        a = h.assigns(got)[0]
        assert a.attempt == f"m00000.{n}"
    got = h.feed(s.AttemptFailed("h/0", a.attempt, "boom", "tb"))
    assert got == [s.Failed("m00000", "h", "boom", "tb")]
    assert h.feed(s.SlotReady("h/1", "h")) == []  # over: nothing more is scheduled


def test_late_results_of_superseded_attempts_are_ignored():
    h = Harness(maps=1, reducers=1)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    h.feed(s.AttemptFailed("h/0", a.attempt, "transient"))
    b = [i for i in h.out if isinstance(i, s.Assign)][-1]
    assert b.attempt != a.attempt
    # the old attempt reports success late: fenced, no commit
    assert h.feed(s.AttemptDone("h/0", a.attempt, {0: ["stale"]}, {})) == []
    # an unknown attempt from another slot is ignored too
    assert h.feed(s.AttemptDone("h/9", b.attempt, {0: ["wrong slot"]}, {})) == []
    got = h.done(b)
    commits = [i for i in got if isinstance(i, s.Commit)]
    assert [c.attempt for c in commits] == [b.attempt]


def test_lost_host_reruns_its_running_and_committed_maps_elsewhere():
    h = Harness(maps=3, reducers=1)
    a0 = h.assigns(h.feed(s.SlotReady("x/0", "x")))[0]
    a1 = h.assigns(h.feed(s.SlotReady("y/0", "y")))[0]
    a2 = h.assigns(h.done(a0, "x"))[0]  # x committed m00000 and runs m00002
    got = h.feed(s.HostLost("x", "link down"))
    assert not any(isinstance(i, s.Failed) for i in got)
    assert h.sched.tasks["m00000"].state == "pending"  # its output lived on x
    assert h.sched.tasks[a2.task].failures == 0  # a lost host is not the task's fault
    rest = h.assigns(h.done(a1, "y"))
    assert rest and rest[0].slot == "y/0" and rest[0].task in ("m00000", "m00002")


def test_no_hosts_left_fails_fast():
    h = Harness(maps=2, reducers=1)
    h.sched.hosts = {"x", "y"}
    h.feed(s.SlotReady("x/0", "x"))
    got = h.feed(s.HostLost("x", "killed"))
    assert not any(isinstance(i, s.NoHosts) for i in got)  # y has not reported yet, but exists
    got = h.feed(s.HostLost("y", "unreachable"))
    assert any(isinstance(i, s.NoHosts) for i in got)


def test_slot_lost_counts_as_a_failure_of_its_task():
    h = Harness(maps=1, reducers=1, max_attempts=2)
    h.feed(s.SlotReady("x/0", "x"))
    h.feed(s.SlotReady("x/1", "x"))
    got = h.feed(s.SlotLost("x/0", "segfault"))
    assert h.sched.tasks["m00000"].failures == 1
    assert h.assigns(got)[0].slot == "x/1"


def test_random_event_orders_keep_invariants_and_commit_each_task_once():
    for seed in range(30):
        rnd = random.Random(seed)
        h = Harness(maps=rnd.randint(1, 8), reducers=rnd.randint(1, 3), max_attempts=50)
        running: list[s.Assign] = []
        for i in range(rnd.randint(1, 4)):
            running += h.assigns(h.feed(s.SlotReady(f"h/{i}", "h")))
        for _ in range(500):
            if not running:
                break
            a = running.pop(rnd.randrange(len(running)))
            if rnd.random() < 0.2:
                got = h.feed(s.AttemptFailed(a.slot, a.attempt, "flaky"))
            else:
                got = h.done(a)
            running += h.assigns(got)
        commits = [i.task for i in h.out if isinstance(i, s.Commit)]
        assert len(commits) == len(set(commits)) == len(h.sched.tasks)
        assert isinstance(h.out[-1], s.Finished)
