"""The scheduler as a pure state machine: events in, instructions out, invariants after each."""

from __future__ import annotations

import random

from mapred.engine import scheduler as s


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


def test_lost_host_is_never_used_again_and_its_attempts_do_not_count():
    h = Harness(maps=4, reducers=1, max_attempts=1)  # any counted failure would fail the job
    h.sched.hosts = {"x", "y"}
    a = h.assigns(h.feed(s.SlotReady("x/0", "x")))[0]
    got = h.feed(s.HostLost("x", "frozen"))
    assert not any(isinstance(i, (s.Failed, s.NoHosts)) for i in got)
    assert h.sched.tasks[a.task].failures == 0 and h.sched.tasks[a.task].state == "pending"
    assert h.feed(s.SlotReady("x/1", "x")) == []  # it came back: ignored
    assert "x/1" not in h.sched.slots
    assert h.feed(s.AttemptDone("x/0", a.attempt, {0: ["late"]}, {})) == []  # fenced
    b = h.assigns(h.feed(s.SlotReady("y/0", "y")))[0]
    assert b.task == a.task and b.attempt != a.attempt
    while True:
        got = h.done(b)
        if any(isinstance(i, s.Finished) for i in got):
            break
        b = h.assigns(got)[0]
    commits = [i for i in h.out if isinstance(i, s.Commit)]
    assert all(c.host == "y" for c in commits) and len(commits) == 5


def test_host_lost_in_the_reduce_phase_reruns_its_maps_but_not_committed_reduces():
    h = Harness(maps=2, reducers=2, speculation=False)
    h.sched.hosts = {"x", "y"}
    a = h.assigns(h.feed(s.SlotReady("x/0", "x")))[0]
    b = h.assigns(h.feed(s.SlotReady("y/0", "y")))[0]
    r_x = h.assigns(h.done(a))  # x commits m0, waits (m1 still running on y)
    assert r_x == []
    reduces = h.assigns(h.done(b))
    r_y = next(r for r in reduces if r.slot == "y/0")
    other = next(r for r in reduces if r.slot == "x/0")
    h.done(r_y)  # one reduce committed on y
    got = h.feed(s.HostLost("x", "killed"))
    assert [c.attempt for c in got if isinstance(c, s.Cancel)] == []  # x's reduce just dropped
    assert h.sched.tasks[a.task].state in ("pending", "running")  # its map output is gone
    assert h.sched.tasks[r_y.task].state == "done"  # a committed part file stays committed
    assert h.sched.tasks[other.task].failures == 0 and h.sched.maps_rerun == 1
    rerun = [i for i in got if isinstance(i, s.Assign)]
    assert [(r.task, r.slot) for r in rerun] == [(a.task, "y/0")]
    last = h.assigns(h.done(rerun[0]))
    assert [r.task for r in last] == [other.task]  # only the reduce that was not committed
    assert sorted(p for _, p in last[0].inputs) == sorted(
        [f"{rerun[0].attempt}/p{other.partition}", f"{b.attempt}/p{other.partition}"])
    assert any(isinstance(i, s.Finished) for i in h.done(last[0]))


def test_map_output_lost_reruns_that_map_and_cancels_running_reduces():
    h = Harness(maps=2, reducers=2, speculation=False)
    h.sched.hosts = {"x", "y"}
    a = h.assigns(h.feed(s.SlotReady("x/0", "x")))[0]
    b = h.assigns(h.feed(s.SlotReady("y/0", "y")))[0]
    h.done(a)
    reduces = h.assigns(h.done(b))
    assert len(reduces) == 2
    got = h.feed(s.MapOutputLost(b.task, "p00000-0000.run truncated"))
    cancels = [i for i in got if isinstance(i, s.Cancel)]
    assert sorted(c.attempt for c in cancels) == sorted(r.attempt for r in reduces)
    assert h.sched.tasks[b.task].committed is None and h.sched.maps_rerun == 1
    assert all(h.sched.tasks[r.task].failures == 0 for r in reduces)
    # a late report about a task that is not committed (any more) changes nothing
    assert h.feed(s.MapOutputLost(b.task, "again")) == []
    assert h.feed(s.MapOutputLost("r00000", "not a map")) == []
    h.feed(s.SlotReady("x/1", "x"))
    h.feed(s.SlotReady("y/1", "y"))
    rerun = [i for i in h.out if isinstance(i, s.Assign) and i.task == b.task][-1]
    assert rerun.attempt == f"{b.task}.1"
    final = h.assigns(h.done(rerun))
    assert sorted(r.task for r in final) == ["r00000", "r00001"]
    assert all(f"{rerun.attempt}/p{r.partition}" in [p for _, p in r.inputs] for r in final)


def test_random_faults_keep_invariants_and_commit_each_task_once():
    """Hosts lost, outputs lost, failures, in random orders: the run always ends, every task's
    final commit is unique, and nothing of a lost host is used after it was lost."""
    for seed in range(40):
        rnd = random.Random(seed)
        hosts = [f"h{i}" for i in range(rnd.randint(2, 4))]
        h = Harness(maps=rnd.randint(1, 8), reducers=rnd.randint(1, 3), max_attempts=50,
                    speculation=rnd.random() < 0.5, speculate_min=0.5)
        h.sched.hosts = set(hosts)
        running: list[s.Assign] = []
        lost: set[str] = set()
        for host in hosts:
            for i in range(rnd.randint(1, 2)):
                running += h.assigns(h.feed(s.SlotReady(f"{host}/{i}", host), dt=0.1))
        for _ in range(600):
            if h.sched.over:
                break
            r = rnd.random()
            alive = [x for x in hosts if x not in lost]
            if r < 0.03 and len(alive) > 1:
                victim = rnd.choice(alive)
                lost.add(victim)
                got = h.feed(s.HostLost(victim, "chaos"), dt=0.1)
                running = [a for a in running if not a.slot.startswith(victim + "/")]
            elif r < 0.06:
                done_maps = [t for t in h.sched.tasks.values() if t.kind == s.MAP
                             and t.state == "done"]
                got = h.feed(s.MapOutputLost(rnd.choice(done_maps).id, "gone"), dt=0.1) \
                    if done_maps else []
            elif running:
                a = running.pop(rnd.randrange(len(running)))
                got = h.feed(s.AttemptFailed(a.slot, a.attempt, "flaky"), dt=0.1) \
                    if rnd.random() < 0.1 else h.done(a)
            else:
                got = h.feed(s.Tick(), dt=1.0)
            for i in got:
                if isinstance(i, s.Cancel):
                    running = [a for a in running if a.attempt != i.attempt]
                    host = i.slot.split("/")[0]  # the runner starts a fresh worker there
                    got += h.feed(s.SlotReady(i.slot, host), dt=0.0)
                if isinstance(i, s.Assign):
                    assert i.slot.split("/")[0] not in lost
                    assert all(src not in lost for src, _ in i.inputs)
            running += h.assigns(got)
        assert h.sched.over and isinstance(h.out[-1], s.Finished), (seed, h.out[-3:])
        final = {t.id: t.committed for t in h.sched.tasks.values()}
        assert all(c is not None for c in final.values())
        # map outputs the reduces read live on hosts still up (part files are already here)
        assert all(t.host not in lost for t in h.sched.tasks.values() if t.kind == s.MAP)


def test_a_retry_goes_to_another_host_while_there_is_one():
    h = Harness(maps=2, reducers=1, speculation=False, exclude_after=99)
    h.sched.hosts = {"full", "ok"}
    a = h.assigns(h.feed(s.SlotReady("full/0", "full"), dt=0))[0]
    b = h.assigns(h.feed(s.SlotReady("ok/0", "ok"), dt=0))[0]
    h.feed(s.AttemptFailed(a.slot, a.attempt, "No space left on device"))
    assert h.assigns(h.feed(s.Tick())) == []  # full/0 is idle but the task failed there
    retry = h.assigns(h.done(b))
    assert [(r.task, r.slot) for r in retry] == [(a.task, "ok/0")]
    # once it has failed on every usable host, any host will do
    h.feed(s.AttemptFailed("ok/0", retry[0].attempt, "again"))
    again = h.assigns(h.feed(s.Tick()))
    assert again and again[0].task == a.task


def test_a_reduce_goes_to_the_host_holding_most_of_its_input():
    h = Harness(maps=2, reducers=1, speculation=False)
    a, b = h.assigns(h.feed(s.SlotReady("a/0", "a"), dt=0) + h.feed(s.SlotReady("b/0", "b"), dt=0))
    h.feed(s.AttemptDone(b.slot, b.attempt, {0: ["b/spill0", "b/spill1"]}, {}))
    got = h.assigns(h.feed(s.AttemptDone(a.slot, a.attempt, {0: ["a/p0"]}, {})))
    assert [(r.task, r.slot) for r in got] == [("r00000", "b/0")]  # a/0 is idle too, and first


def test_reduces_spread_over_idle_slots_when_inputs_are_everywhere():
    h = Harness(maps=2, reducers=2, speculation=False)
    a = h.assigns(h.feed(s.SlotReady("a/0", "a"), dt=0) + h.feed(s.SlotReady("b/0", "b"), dt=0))
    h.feed(s.AttemptDone(a[0].slot, a[0].attempt, {0: ["x/p0"], 1: ["x/p1"]}, {}))
    got = h.assigns(h.feed(s.AttemptDone(a[1].slot, a[1].attempt, {0: ["y/p0"], 1: ["y/p1"]}, {})))
    assert sorted((r.task, r.slot) for r in got) == [("r00000", "a/0"), ("r00001", "b/0")]


# --- locality: map tasks go where their input is cached ------------------------------------


def held(sched: s.Scheduler, host: str) -> set[str]:
    return {t.id for t in sched.tasks.values() if host in t.cached_on}


def test_a_map_task_goes_to_a_host_that_holds_its_input():
    h = Harness(maps=6, reducers=1, speculation=False)
    for i, host in enumerate("abc"):  # a: m0, m3; b: m1, m4; c: m2, m5
        h.feed(s.InputsCached(host, frozenset({f"m{i:05d}", f"m{i + 3:05d}"})), dt=0)
    first = h.assigns(h.feed(s.SlotReady("c/0", "c"), dt=0) + h.feed(s.SlotReady("b/0", "b"), dt=0)
                      + h.feed(s.SlotReady("a/0", "a"), dt=0))
    assert [(a.slot, a.task) for a in first] == [("c/0", "m00002"), ("b/0", "m00001"),
                                                 ("a/0", "m00000")]
    second = [a for a0 in reversed(first) for a in h.assigns(h.done(a0))]
    assert [(a.slot, a.task) for a in second] == [("a/0", "m00003"), ("b/0", "m00004"),
                                                  ("c/0", "m00005")]


def test_a_host_holding_nothing_takes_unheld_work_first_then_the_longest_backlog():
    h = Harness(maps=5, reducers=1, speculation=False)
    h.feed(s.InputsCached("a", frozenset({"m00000", "m00001", "m00002"})), dt=0)
    h.feed(s.InputsCached("b", frozenset({"m00003"})), dt=0)
    h.feed(s.SlotReady("a/0", "a"), dt=0)
    h.feed(s.SlotReady("b/0", "b"), dt=0)
    # a new host: first the input nobody holds (m4), then it helps the busiest host (a)
    first = h.assigns(h.feed(s.SlotReady("x/0", "x"), dt=0))
    assert [(a.slot, a.task) for a in first] == [("x/0", "m00004")]
    again = h.assigns(h.done(first[0]))
    assert [(a.slot, a.task) for a in again] == [("x/0", "m00001")]


def test_a_free_slot_never_waits_for_the_busy_host_holding_the_input():
    h = Harness(maps=3, reducers=1, speculation=False)
    h.feed(s.InputsCached("a", frozenset({"m00000", "m00001", "m00002"})), dt=0)
    a0 = h.assigns(h.feed(s.SlotReady("a/0", "a"), dt=0))
    b0 = h.assigns(h.feed(s.SlotReady("b/0", "b"), dt=0))  # a is busy: b takes a's work
    assert [a.task for a in a0 + b0] == ["m00000", "m00001"]
    assert [a.task for a in h.assigns(h.done(b0[0]))] == ["m00002"]


def test_a_retry_leaves_the_holder_it_failed_on():
    h = Harness(maps=1, reducers=1, speculation=False, exclude_after=99)
    h.sched.hosts = {"a", "b"}
    h.feed(s.InputsCached("a", frozenset({"m00000"})), dt=0)
    a0 = h.assigns(h.feed(s.SlotReady("a/0", "a"), dt=0))[0]
    assert h.assigns(h.feed(s.SlotReady("b/0", "b"), dt=0)) == []
    h.feed(s.AttemptFailed(a0.slot, a0.attempt, "flaky"), dt=0)
    retry = h.assigns(h.feed(s.Tick()))
    assert [(r.slot, r.task) for r in retry] == [("b/0", "m00000")]


def test_random_cached_inputs_keep_invariants_and_prefer_holders():
    """Random caches, completions, failures, lost hosts and outputs: the invariants hold after
    every event (among them: no slot idle while a task it may run is pending), the run ends with
    each task committed once, and a map attempt starts on a host not holding its input only when
    that host held no pending task it could run."""
    for seed in range(40):
        rnd = random.Random(seed)
        hosts = [f"h{i}" for i in range(rnd.randint(2, 4))]
        h = Harness(maps=rnd.randint(1, 12), reducers=rnd.randint(1, 3), max_attempts=50,
                    speculation=rnd.random() < 0.5, speculate_min=0.5, exclude_after=99)
        h.sched.hosts = set(hosts)
        maps = [t for t in h.sched.tasks if t.startswith("m")]
        for host in hosts:
            h.feed(s.InputsCached(host, frozenset(t for t in maps if rnd.random() < 0.4)), dt=0)
        running: list[s.Assign] = []
        lost: set[str] = set()

        def feed(event: s.Event, dt: float) -> list[s.Instruction]:
            before = {t.id: set(t.cached_on) for t in h.sched.tasks.values()
                      if t.kind == s.MAP and t.state == "pending" and t.not_before <= h.now + dt}
            got = h.feed(event, dt)
            for a in h.assigns(got):
                host = a.slot.split("/")[0]
                if a.kind == s.MAP and not a.backup and host not in before.get(a.task, {host}):
                    mine = [t for t, on in before.items()
                            if host in on and host not in h.sched.tasks[t].failed_on]
                    assert not mine, (seed, a, mine)
                    before.pop(a.task)
            return got

        for host in hosts:
            for i in range(rnd.randint(1, 2)):
                running += h.assigns(feed(s.SlotReady(f"{host}/{i}", host), dt=0.1))
        for _ in range(600):
            if h.sched.over:
                break
            r = rnd.random()
            alive = [x for x in hosts if x not in lost]
            if r < 0.03 and len(alive) > 1:
                victim = rnd.choice(alive)
                lost.add(victim)
                got = feed(s.HostLost(victim, "chaos"), dt=0.1)
                running = [a for a in running if not a.slot.startswith(victim + "/")]
            elif r < 0.06:
                done_maps = [t.id for t in h.sched.tasks.values() if t.kind == s.MAP
                             and t.state == "done"]
                got = feed(s.MapOutputLost(rnd.choice(done_maps), "gone"), dt=0.1) \
                    if done_maps else []
            elif r < 0.1:  # a shard staged on a host
                got = feed(s.InputsCached(rnd.choice(hosts), frozenset({rnd.choice(maps)})), 0)
            elif running:
                a = running.pop(rnd.randrange(len(running)))
                outputs = {0: [f"{a.attempt}/p0"]} if a.kind == s.MAP else {}
                got = feed(s.AttemptFailed(a.slot, a.attempt, "flaky"), dt=0.1) \
                    if rnd.random() < 0.1 else feed(s.AttemptDone(a.slot, a.attempt, outputs, {}),
                                                    dt=0.1)
            else:
                got = feed(s.Tick(), dt=1.0)
            for i in got:
                if isinstance(i, s.Cancel):
                    running = [a for a in running if a.attempt != i.attempt]
                    got += feed(s.SlotReady(i.slot, i.slot.split("/")[0]), dt=0.0)
            running += h.assigns(got)
        assert h.sched.over and isinstance(h.out[-1], s.Finished), (seed, h.out[-3:])
        commits = {i.task for i in h.out if isinstance(i, s.Commit)}
        assert commits == set(h.sched.tasks), seed


def test_failed_carries_the_counts_the_error_message_needs():
    h = Harness(maps=1, reducers=1, max_attempts=1)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    (failed,) = h.feed(s.AttemptFailed("h/0", a.attempt, "boom"))
    assert isinstance(failed, s.Failed)
    assert (failed.kind, failed.failures, failed.partition) == (s.MAP, 1, -1)


def test_commit_carries_the_map_outputs():
    h = Harness(maps=1, reducers=1)
    a = h.assigns(h.feed(s.SlotReady("h/0", "h")))[0]
    (commit,) = [i for i in h.done(a) if isinstance(i, s.Commit)]
    assert commit.outputs == {0: [f"{a.attempt}/p0"], 1: [f"{a.attempt}/p1"]}


def test_the_deadline_stops_the_run_on_the_first_tick_past_it():
    h = Harness(maps=2, reducers=1, deadline_at=150.0)
    assert h.assigns(h.feed(s.SlotReady("h/0", "h")))  # at 100: before it
    assert h.feed(s.Preloaded("m00001", "h", {}), dt=100) == []  # only a Tick checks the time
    assert h.feed(s.Tick(), dt=1) == [s.DeadlinePassed()]
    assert h.feed(s.Tick()) == []  # over
