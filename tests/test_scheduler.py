"""The scheduler as a pure state machine: events in, instructions out, invariants after each."""

from __future__ import annotations

import random

from mapred import scheduler as s


class Harness:
    def __init__(self, maps: int, reducers: int, max_attempts: int = 4, **policy) -> None:
        pol = s.Policy(max_attempts=max_attempts, **policy)
        self.sched = s.Scheduler([f"m{i:05d}" for i in range(maps)], reducers, policy=pol)
        self.out: list[s.Instruction] = []
        self.now = 0.0

    def feed(self, event: s.Event, dt: float = 100.0) -> list[s.Instruction]:
        """Handle ``event`` ``dt`` seconds after the previous one (default: past any backoff)."""
        self.now += dt
        got = self.sched.handle(event, self.now)
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
        got = h.feed(s.AttemptFailed("h/0", a.attempt, "boom", "tb"), dt=0)
        assert h.assigns(got) == []  # backoff first
        a = h.assigns(h.feed(s.Tick()))[0]
        assert a.attempt == f"m00000.{n}"
    got = h.feed(s.AttemptFailed("h/0", a.attempt, "boom", "tb"))
    assert got == [s.Failed("m00000", "h", "boom", "tb")]
    assert h.feed(s.SlotReady("h/1", "h")) == []  # over: nothing more is scheduled


def test_late_results_of_superseded_attempts_are_ignored():
    h = Harness(maps=1, reducers=1)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    h.feed(s.AttemptFailed("h/0", a.attempt, "transient"))
    h.feed(s.Tick())
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
    h.feed(s.SlotLost("x/0", "segfault"))
    assert h.sched.tasks["m00000"].failures == 1
    assert h.assigns(h.feed(s.Tick()))[0].slot == "x/1"


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
            if rnd.random() < 0.3 or not running:
                running += h.assigns(h.feed(s.Tick()))
        commits = [i.task for i in h.out if isinstance(i, s.Commit)]
        assert len(commits) == len(set(commits)) == len(h.sched.tasks)
        assert isinstance(h.out[-1], s.Finished)


def test_backoff_grows_with_jitter_and_is_deterministic():
    h = Harness(maps=1, reducers=1, max_attempts=10, backoff=1.0, backoff_cap=8.0)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    waits = []
    for _ in range(5):
        h.feed(s.AttemptFailed("h/0", a.attempt, "flaky"), dt=0)
        task = h.sched.tasks["m00000"]
        waits.append(task.not_before - h.now)
        assert h.assigns(h.feed(s.Tick(), dt=waits[-1] * 0.99)) == []
        a = h.assigns(h.feed(s.Tick(), dt=waits[-1] * 0.02))[0]
    bases = [1, 2, 4, 8, 8]
    assert all(0.5 * b <= w <= 1.5 * b for w, b in zip(waits, bases)), waits
    assert len(set(round(w / b, 6) for w, b in zip(waits, bases))) > 1  # jittered


def test_straggler_gets_one_backup_on_another_host_first_finisher_wins():
    h = Harness(maps=3, reducers=1, speculate_min=2.0, speculate_factor=1.5)
    a = h.assigns(h.feed(s.SlotReady("slow/0", "slow"), dt=0))[0]
    b = h.assigns(h.feed(s.SlotReady("fast/0", "fast"), dt=0))[0]
    c = h.assigns(h.done(b) if False else h.feed(
        s.AttemptDone(b.slot, b.attempt, {0: ["b"]}, {}), dt=1.0))[0]
    got = h.feed(s.AttemptDone(c.slot, c.attempt, {0: ["c"]}, {}), dt=1.0)
    assert h.assigns(got) == []  # a has run 2 s: median 1 s, limit max(2, 1.5) not passed yet
    backup = h.assigns(h.feed(s.Tick(), dt=0.5))
    assert len(backup) == 1 and backup[0].task == a.task and backup[0].backup
    assert backup[0].slot == "fast/0"
    assert h.assigns(h.feed(s.Tick(), dt=10)) == []  # never a second backup
    got = h.feed(s.AttemptDone(backup[0].slot, backup[0].attempt, {0: ["a2"]}, {}), dt=0.1)
    commits = [i for i in got if isinstance(i, s.Commit)]
    cancels = [i for i in got if isinstance(i, s.Cancel)]
    assert [c.attempt for c in commits] == [backup[0].attempt]
    assert [(c.slot, c.attempt) for c in cancels] == [("slow/0", a.attempt)]
    # the original finishing late is fenced
    assert h.feed(s.AttemptDone("slow/0", a.attempt, {0: ["a1"]}, {})) == []
    assert h.sched.backups == 1


def test_no_speculation_when_disabled():
    h = Harness(maps=2, reducers=1, speculation=False)
    h.assigns(h.feed(s.SlotReady("x/0", "x"), dt=0))
    b = h.assigns(h.feed(s.SlotReady("y/0", "y"), dt=0))[0]
    h.feed(s.AttemptDone(b.slot, b.attempt, {}, {}), dt=1)
    assert h.assigns(h.feed(s.Tick(), dt=1000)) == []


def test_host_with_failures_of_several_tasks_is_excluded_but_never_the_last():
    h = Harness(maps=6, reducers=1, max_attempts=10, exclude_after=3, speculation=False)
    h.sched.hosts = {"bad", "good"}
    queue = h.assigns(h.feed(s.SlotReady("good/0", "good"), dt=0))
    queue += h.assigns(h.feed(s.SlotReady("bad/0", "bad"), dt=0))
    excluded = []
    for _ in range(30):
        if not queue:
            queue += h.assigns(h.feed(s.Tick()))
            continue
        a = queue.pop(0)
        if a.slot.startswith("bad"):
            got = h.feed(s.AttemptFailed(a.slot, a.attempt, "disk error"))
        else:
            got = h.done(a)
        excluded += [i for i in got if isinstance(i, s.ExcludeHost)]
        queue += h.assigns(got)
    assert len(h.sched.host_failed_tasks["bad"]) == 3
    assert [e.host for e in excluded] == ["bad"]
    assert "bad/0" not in h.sched.slots
    assert h.feed(s.SlotReady("bad/1", "bad")) == [] or "bad/1" not in h.sched.slots
    # the last host is never excluded: its tasks fail by their own attempt limit instead
    h2 = Harness(maps=4, reducers=1, max_attempts=10, exclude_after=2, speculation=False)
    h2.sched.hosts = {"only"}
    a = h2.assigns(h2.feed(s.SlotReady("only/0", "only")))[0]
    for _ in range(4):
        got = h2.feed(s.AttemptFailed("only/0", a.attempt, "x"))
        assert not any(isinstance(i, s.ExcludeHost) for i in got)
        a = h2.assigns(got + h2.feed(s.Tick()))[0]


def test_lost_host_cancels_reduces_running_on_its_outputs():
    h = Harness(maps=2, reducers=1, speculation=False)
    h.sched.hosts = {"x", "y"}
    a = h.assigns(h.feed(s.SlotReady("x/0", "x")))[0]
    b = h.assigns(h.feed(s.SlotReady("y/0", "y")))[0]
    h.done(a)
    r = h.assigns(h.done(b))
    assert r and r[0].kind == s.REDUCE
    got = h.feed(s.HostLost("x", "killed"))
    cancels = [i for i in got if isinstance(i, s.Cancel)]
    reduce_slot = r[0].slot
    if reduce_slot.startswith("y/"):
        assert [c.attempt for c in cancels] == [r[0].attempt]
    assert h.sched.tasks[a.task].state in ("pending", "running")


def test_preloaded_maps_are_not_rerun():
    h = Harness(maps=3, reducers=1)
    h.feed(s.Preloaded("m00000", "h", {0: ["old/p0"]}))
    h.feed(s.Preloaded("m00002", "h", {0: ["old/p2"]}))
    got = h.assigns(h.feed(s.SlotReady("h/0", "h")))
    assert [a.task for a in got] == ["m00001"]
    r = h.assigns(h.done(got[0]))[0]
    assert sorted(p for _, p in r.inputs) == ["m00001.0/p0", "old/p0", "old/p2"]
