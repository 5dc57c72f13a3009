"""Fault tolerance on the real test LAN: every fault injected for real, output checked byte for byte.

A host killed, cut off (link down: packets vanish, no reset), frozen (SIGSTOP) then thawed,
slowed (rate limit), its disk full; a shard that always fails; every host down; the coordinator
killed with SIGKILL then resumed; Ctrl-C / SIGTERM. Each run's output is compared with the clean
run's, and no process of ours and no scratch dir may remain on any host afterwards.

The job is plain Python and sleeps a little per record, so faults land mid-map deterministically:
the tests wait for a number of ``task_end`` events in the run's journal, then strike.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lanlib import WORKDIR, Host, Lan
from mrtest import run_mapred as mapred

KEPT_RE = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")  # a run id: WORKDIR/keep/RUN_ID
ROOT = Path(__file__).resolve().parents[2]
SHARD = "20K"  # 17 shards of ~140 records in the corpus below
REDUCERS = "4"
JOB = '''\
import time

DELAY = 0.02      # seconds per record: a shard of ~150 records maps in ~3 s
RDELAY = 0.0      # seconds per key in the reducer
FAIL = None       # a record containing this raises
SLOW = None       # a record containing this sleeps SLOW_SECONDS
SLOW_SECONDS = 0.0


def init(params):
    global DELAY, RDELAY, FAIL, SLOW, SLOW_SECONDS
    DELAY = float(params.get("delay", DELAY))
    RDELAY = float(params.get("rdelay", RDELAY))
    FAIL = params.get("fail", "").encode() or None
    SLOW = params.get("slow", "").encode() or None
    SLOW_SECONDS = float(params.get("slow_seconds", 0))


def mapper(line):
    if FAIL is not None and FAIL in line:
        raise ValueError("cannot map this record: %r" % line[:40])
    if SLOW is not None and SLOW in line:
        time.sleep(SLOW_SECONDS)
    time.sleep(DELAY)
    for w in line.split():
        yield w, 1


def reducer(key, values):
    if RDELAY:
        time.sleep(RDELAY)
    yield key, sum(values)
'''


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hosts(lan: Lan, lan_mapred: str, lan_hosts_toml: Path) -> Path:
    return lan_hosts_toml


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "slowcount.py"
    path.write_text(JOB)
    return path


def make_corpus(root: Path, seed: int) -> Path:
    """4 files of 600 lines: 17 shards of ~140 records (new to every host: its words are
    unique to ``seed``); markers for a failing and a slow record."""
    root.mkdir(parents=True)
    rng = random.Random(seed)
    words = [f"w{seed % 100000:05d}x{i:04d}" for i in range(3000)]  # fixed size: 17 shards
    for f in range(4):
        lines = [" ".join(rng.choices(words, k=12)) for _ in range(600)]
        if f == 1:
            lines[300] += " poison"  # in the middle of the file: one shard, not its first record
        if f == 3:
            lines[590] += " sloth"  # in the last shard
        (root / f"f{f}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("faults") / "corpus", os.getpid())


@pytest.fixture(scope="module")
def clean(hosts: Path, lan: Lan, job: Path, corpus: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The clean run on the LAN (the reference), checked against a local run of the job."""
    tmp = tmp_path_factory.mktemp("clean")
    env = {"XDG_STATE_HOME": str(tmp / "state")}
    mapred("run", job, corpus, "-o", tmp / "local", "-p", "delay=0", "--reducers", REDUCERS,
           env=env)
    run = Run(hosts, job, corpus, tmp / "lan", env)
    assert run.wait(240) == 0, run.stderr
    assert parts(tmp / "lan") == parts(tmp / "local")
    return {"parts": parts(tmp / "lan"), "counters": run.summary()["counters"]}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture
def healed(lan: Lan) -> Iterator[Lan]:
    """The LAN, healed after the test whatever it did; hosts a test killed are swept."""
    try:
        yield lan
    finally:
        lan.heal()
        for h in lan.hosts:
            sweep(lan, h)


# --------------------------------------------------------------------------- helpers


def parts(out: Path) -> dict[str, bytes]:
    assert (out / "_SUCCESS").exists(), sorted(os.listdir(out)) if out.exists() else out
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}


class Run:
    """``mapred run`` of the test job on the LAN in the background, with its journal at hand."""

    def __init__(self, hosts: Path, job: Path, corpus: Path, out: Path, env: dict[str, str],
                 *args: str) -> None:
        self.out, self.env = out, env
        self.runs = Path(env["XDG_STATE_HOME"]) / "mapred" / "runs"
        self.before = set(self.runs.iterdir()) if self.runs.exists() else set()
        self.argv = [sys.executable, "-m", "mapred.cli.main", "run", str(job), str(corpus), "-o",
                     str(out), "--hosts", str(hosts), "--shard-size", SHARD, "--reducers",
                     REDUCERS, *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env={**os.environ, **env},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.stderr = ""

    @property
    def dir(self) -> Path | None:
        new = [d for d in self.runs.iterdir() if d not in self.before] if self.runs.exists() \
            else []
        return sorted(new)[0] if new else None

    def events(self) -> list[dict]:
        d = self.dir
        if d is None:
            return []
        out = []
        try:
            lines = (d / "events.jsonl").read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def until(self, what: str, pred: Callable[[list[dict]], bool],
              timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.events()
            if pred(evs):
                return evs
            if self.proc.poll() is not None:
                self.wait(1)
                raise AssertionError(f"run ended before {what}: {self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} after {timeout}s")

    def until_ok(self, n: int, kind: str = "map") -> list[dict]:
        return self.until(f"{n} committed {kind} tasks",
                          lambda evs: len(ok(evs, kind)) >= n)

    def wait(self, timeout: float = 180) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stderr is not None
            self.stderr += self.proc.stderr.read().decode(errors="replace")
        return code

    def summary(self) -> dict:
        assert self.dir is not None
        return json.loads((self.dir / "summary.json").read_text())

    @property
    def shards(self) -> int:
        assert self.dir is not None
        return len(json.loads((self.dir / "plan.json").read_text())["shards"])


def ok(events: list[dict], kind: str = "map") -> list[dict]:
    return [e for e in events if e["event"] == "task_end" and e["outcome"] == "ok"
            and e["kind"] == kind]


def starts(events: list[dict], kind: str = "map") -> list[dict]:
    return [e for e in events if e["event"] == "task_start" and e["kind"] == kind]


def running_on(events: list[dict], kind: str) -> dict[str, str]:
    """attempt -> host of the attempts of ``kind`` started and not ended."""
    ended = {e["attempt"] for e in events if e["event"] == "task_end"}
    return {e["attempt"]: e["host"] for e in starts(events, kind) if e["attempt"] not in ended}


def host_lost(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "host_lost"]


def leftovers(lan: Lan) -> dict[str, list[str]]:
    """Per host: processes (anything but sshd's listener) and run/kept dirs still there."""
    out = {}
    for h in lan.hosts:
        if not h.alive():
            out[h.name] = ["(down)"]
            continue
        procs = [_cmdline(p) for p in h.pids()]
        cp = h.run(f"ls -A {WORKDIR}/runs {WORKDIR}/keep 2>/dev/null | grep -v :")
        dirs = [d for d in cp.stdout.split() if d]
        if procs or dirs:
            out[h.name] = procs + dirs
    return out


def wait_clean(lan: Lan, timeout: float = 20) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(lan)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


def settle(lan: Lan, timeout: float = 20) -> dict[str, list[str]]:
    """Wait until no host runs anything of ours or has a run's scratch dir; then return what
    the hosts keep for ``--resume`` (host -> run ids), which must be all that is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(lan)
        kept = {h: [d for d in v if KEPT_RE.fullmatch(d)] for h, v in left.items()}
        if all(v == kept[h] for h, v in left.items()) or time.monotonic() > deadline:
            assert all(v == kept[h] for h, v in left.items()), left
            return {h: v for h, v in kept.items() if v}
        time.sleep(0.25)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return str(pid)


def sweep(lan: Lan, h: Host) -> None:
    """What the next run's agent does first on a host that died with a run: remove its scratch.
    (Starts an agent there with no coordinator: it sweeps dead runs, then cleans up and exits.)"""
    cfg = json.dumps({"workdir": WORKDIR, "token": "sweep_" + uuid.uuid4().hex[:12]})
    h.run([lan.python, "-m", "mapred.worker.fetch", "agent"], input=cfg + "\n", timeout=60)


def assert_same(run: Run, clean: dict[str, object], counters: bool = True) -> dict:
    """Same bytes as the clean run, and counters that count every record once."""
    assert parts(run.out) == clean["parts"]
    summary = run.summary()
    if not counters:
        return summary
    want = clean["counters"]
    assert isinstance(want, dict)
    for key in ("bytes_in", "records_in", "pairs", "keys_out", "bytes_out", "map_tasks",
                "reduce_tasks"):
        assert summary["counters"][key] == want[key], (key, summary["counters"], want)
    assert sum(h["tasks"] for h in summary["hosts"].values()) == \
        want["map_tasks"] + want["reduce_tasks"]
    return summary


# --------------------------------------------------------------------------- host lost


def test_host_killed_mid_map(hosts: Path, healed: Lan, job: Path, corpus: Path,
                             clean: dict[str, object], tmp_path: Path,
                             env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env)
    evs = run.until_ok(7)
    victim = next(e["host"] for e in ok(evs))  # it has committed maps: they must run again
    healed[victim].kill()
    t_kill = time.time()
    assert run.wait() == 0, run.stderr
    evs = run.events()
    (lost,) = host_lost(evs)
    assert lost["host"] == victim and lost["ts"] - t_kill < 5
    summary = assert_same(run, clean)
    c = summary["counters"]
    assert c["hosts_lost"] == 1 and c["maps_rerun"] >= 1 and c["retries"] == 0
    assert victim not in summary["hosts"]  # nothing it did counts any more
    assert not any(e["host"] == victim for e in starts(evs) if e["ts"] > lost["ts"])
    assert "1 host lost" in run.stderr
    healed.heal()
    sweep(healed, healed[victim])
    assert wait_clean(healed) == {}


def test_link_cut_mid_map_is_detected_within_15s(hosts: Path, healed: Lan, job: Path,
                                                 corpus: Path, clean: dict[str, object],
                                                 tmp_path: Path, env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env)
    evs = run.until_ok(7)
    victim = next(e["host"] for e in ok(evs))
    healed[victim].link_down()
    t_cut = time.time()
    assert run.wait() == 0, run.stderr
    (lost,) = host_lost(run.events())
    assert lost["host"] == victim and "no answer" in lost["reason"]
    assert lost["ts"] - t_cut <= 15, lost["ts"] - t_cut
    summary = assert_same(run, clean)
    assert summary["counters"]["maps_rerun"] >= 1
    healed[victim].link_up()
    # cut off, its agent cannot tell our run finished: it stops the run's processes on its
    # own within 30 s, keeping the committed outputs (as after a coordinator crash) ...
    assert run.dir is not None
    assert settle(healed, timeout=45) in ({}, {victim: [run.dir.name]})
    # ... which the next run from this state dir finds abandoned and removes
    again = Run(hosts, job, corpus, tmp_path / "again", env, "-p", "delay=0")
    assert again.wait() == 0, again.stderr
    assert wait_clean(healed) == {}


def test_host_killed_after_its_maps_finished_before_the_shuffle(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    # the last shard holds a record that takes 10 s: every other map commits, nobody reduces yet
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "slow=sloth",
              "-p", "slow_seconds=10", "--no-speculation")
    evs = run.until("the plan", lambda evs: bool(evs))
    evs = run.until_ok(run.shards - 1)
    slow_host = running_on(evs, "map")
    assert len(slow_host) == 1 and not starts(evs, "reduce")
    victim = next(e["host"] for e in ok(evs) if e["host"] not in slow_host.values())
    committed = {e["task"] for e in ok(evs) if e["host"] == victim}
    healed[victim].kill()
    assert run.wait() == 0, run.stderr
    evs = run.events()
    (lost,) = host_lost(evs)
    summary = assert_same(run, clean)
    assert summary["counters"]["maps_rerun"] == len(committed)
    rerun = {e["task"] for e in ok(evs) if e["ts"] > lost["ts"]}
    assert committed <= rerun  # its outputs were needed and ran again elsewhere
    healed.heal()
    sweep(healed, healed[victim])
    assert wait_clean(healed) == {}


def test_reducer_host_killed_mid_reduce(hosts: Path, healed: Lan, job: Path, corpus: Path,
                                        clean: dict[str, object], tmp_path: Path,
                                        env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "rdelay=0.01")  # ~8 s a reduce
    evs = run.until("two reduces running", lambda evs: len(running_on(evs, "reduce")) >= 2)
    time.sleep(1.0)
    evs = run.events()
    victim = next(iter(running_on(evs, "reduce").values()))
    healed[victim].kill()
    assert run.wait() == 0, run.stderr
    evs = run.events()
    (lost,) = host_lost(evs)
    assert lost["host"] == victim
    summary = assert_same(run, clean)
    assert summary["counters"]["retries"] == 0  # a lost host is nobody's failure
    lost_attempts = [e for e in evs if e["event"] == "task_end" and e["outcome"] == "lost"]
    assert any(e["kind"] == "reduce" for e in lost_attempts)
    assert all(e["host"] != victim for e in ok(evs, "reduce"))
    healed.heal()
    sweep(healed, healed[victim])
    assert wait_clean(healed) == {}


def test_frozen_host_is_replaced_and_its_late_results_are_discarded(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env)
    evs = run.until_ok(4)
    victim = next(h for h in running_on(evs, "map").values())
    frozen_attempts = {a for a, h in running_on(evs, "map").items() if h == victim}
    healed[victim].freeze()
    evs = run.until("the frozen host lost", lambda evs: bool(host_lost(evs)), timeout=30)
    # its attempts were reassigned; now it wakes up and finishes them: too late
    run.until("its tasks reassigned", lambda evs: {a.split(".")[0] for a in frozen_attempts}
              <= {e["task"] for e in starts(evs) if e["host"] != victim})
    healed[victim].thaw()
    assert run.wait() == 0, run.stderr
    evs = run.events()
    (lost,) = host_lost(evs)
    assert lost["host"] == victim
    assert_same(run, clean)
    late = [e for e in evs if e["event"] == "task_end" and e["attempt"] in frozen_attempts]
    # an attempt may have finished in the instant before the freeze (its result was on the way);
    # every other one ended lost, or killed when a backup beat it, never committed late
    assert any(e["outcome"] in ("lost", "killed") for e in late), late
    assert all(e["outcome"] in ("lost", "killed") or e["ts"] < lost["ts"] for e in late), late
    assert not any(e["host"] == victim for e in ok(evs) + ok(evs, "reduce")
                   if e["ts"] > lost["ts"])
    commits = [e["task"] for e in ok(evs) + ok(evs, "reduce")]
    assert len(set(commits)) == run.shards + int(REDUCERS)
    assert wait_clean(healed) == {}  # thawed, it learns the run gave it up and cleans up


# --------------------------------------------------------------------------- slow, failing, full


def test_slow_host_gets_backups_and_the_first_finisher_wins(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    fresh = make_corpus(tmp_path / "corpus", os.getpid() + 1)  # no host has its shards yet
    mapred("run", job, fresh, "-o", tmp_path / "local", "-p", "delay=0", "--reducers",
           REDUCERS, env=env)
    slow = healed["h3"]
    slow.netem(rate="50kbit")  # every shard it maps, every map output it serves comes slowly
    run = Run(hosts, job, fresh, tmp_path / "out", env, "-p", "delay=0.005")
    assert run.wait() == 0, run.stderr
    evs = run.events()
    assert parts(tmp_path / "out") == parts(tmp_path / "local")
    summary = run.summary()
    backups = [e for e in starts(evs) + starts(evs, "reduce") if e["backup"]]
    # (a backup cancelled while its shard was still on the way never journals its start)
    assert summary["counters"]["backups"] >= len(backups) >= 1
    ends = {e["attempt"]: e for e in evs if e["event"] == "task_end"}
    won = [b for b in backups if ends[b["attempt"]]["outcome"] == "ok"]
    assert won, "no backup finished first"
    for b in won:  # the original it beat was killed
        others = [e for e in ends.values() if e["task"] == b["task"] and e is not ends[
            b["attempt"]]]
        assert others and all(o["outcome"] == "killed" for o in others), others
    assert not host_lost(evs)
    slow.netem_clear()
    assert wait_clean(healed) == {}


def test_always_failing_shard_fails_the_job_fast_with_its_traceback(
        hosts: Path, healed: Lan, job: Path, corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    t0 = time.monotonic()
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "fail=poison")
    assert run.wait(120) == 1, run.stderr
    assert time.monotonic() - t0 < 60
    err = run.stderr
    assert "failed 4 times" in err and "(f1.txt bytes " in err, err
    assert "ValueError: cannot map this record" in err and "Traceback" in err, err
    assert "in mapper" in err and "on host h" in err, err
    assert not (tmp_path / "out").exists()
    fails = [e for e in run.events() if e["event"] == "task_end" and e["outcome"] == "failed"]
    assert len(fails) == 4 and len({e["task"] for e in fails}) == 1
    assert wait_clean(healed) == {}


def test_every_host_down_fails_fast_with_exit_3(hosts: Path, healed: Lan, job: Path,
                                                corpus: Path, tmp_path: Path,
                                                env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env)
    run.until_ok(2)
    for h in healed.hosts:
        h.kill()
    t0 = time.monotonic()
    assert run.wait(60) == 3, run.stderr
    # a killed host usually resets its connections (seconds); the bound is the worst case: hosts
    # silent for DEAD_AFTER (10 s), then the shutdown, on a loaded machine (15.03 s seen in CI)
    assert time.monotonic() - t0 < 20
    assert "no usable host left" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()
    # down before the run starts: refused at once too
    t0 = time.monotonic()
    proc = mapred("run", job, corpus, "-o", tmp_path / "out2", "--hosts", hosts, env=env,
                  check=False, timeout=60)
    assert proc.returncode == 3 and time.monotonic() - t0 < 20, proc.stderr
    assert b"no usable host" in proc.stderr
    healed.heal()
    for h in healed.hosts:
        sweep(healed, h)
    assert wait_clean(healed) == {}


def test_full_disk_on_a_host_moves_its_tasks_elsewhere(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    full = healed["h2"]
    full.small_disk(1)  # 1 MiB for its shard cache, scratch and map outputs
    filler = "dd if=/dev/zero of=/srv/mapred/filler bs=64k count=12 2>/dev/null"
    full.run(filler, check=True)  # 768 KiB taken: room for a few shards and outputs only
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "delay=0.005")
    assert run.wait() == 0, run.stderr
    evs = run.events()
    assert_same(run, clean)
    failed = [e for e in evs if e["event"] == "task_end" and e["outcome"] == "failed"]
    assert failed and all(e["host"] == full.name for e in failed), failed
    assert all("No space left on device" in (e["error"] or "") for e in failed), failed
    assert not host_lost(evs)
    assert full.run("ls -A /srv/mapred/runs").stdout.split() == []
    full.small_disk_clear()
    assert wait_clean(healed) == {}


def test_truncated_map_output_is_never_read_its_map_runs_again(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "slow=sloth",
              "-p", "slow_seconds=6", "--no-speculation")
    evs = run.until("the plan", lambda evs: bool(evs))
    evs = run.until_ok(run.shards - 1)
    victim = ok(evs)[0]
    path = sorted(p for ps in victim["outputs"].values() for p in ps)[0]
    size = int(healed[victim["host"]].run(["stat", "-c", "%s", path], check=True).stdout)
    healed[victim["host"]].run(["truncate", "-s", str(size // 2), path], check=True)
    assert run.wait() == 0, run.stderr
    evs = run.events()
    assert_same(run, clean)
    lost = [e for e in evs if e["event"] == "output_lost"]
    assert [e["task"] for e in lost] == [victim["task"]], lost
    assert [e["task"] for e in ok(evs) if e["ts"] > lost[0]["ts"]].count(victim["task"]) == 1
    assert run.summary()["counters"]["retries"] == 0  # not the reducer's fault
    assert not host_lost(evs)
    assert wait_clean(healed) == {}


def test_damaged_cached_shards_are_detected_and_sent_again(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    flip = ("import os, sys\n"
            "for n in os.listdir(sys.argv[1]):\n"
            "    p = os.path.join(sys.argv[1], n)\n"
            "    with open(p, 'r+b') as f:\n"
            "        b = f.read(1)\n"
            "        f.seek(0)\n"
            "        f.write(bytes([b[0] ^ 1]))\n")
    for h in healed.hosts:  # every cached shard on every host now has one wrong byte
        h.run([healed.python, "-c", flip, f"{WORKDIR}/cache"], check=True)
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "delay=0")
    assert run.wait() == 0, run.stderr
    assert_same(run, clean)
    assert "is damaged" in run.stderr and "sending it again" in run.stderr, run.stderr
    assert wait_clean(healed) == {}


# --------------------------------------------------------------------------- coordinator


def test_coordinator_kill_9_then_resume_reuses_the_hosts_committed_maps(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env, "--no-speculation")
    run.until_ok(8)
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    first = run.dir
    assert first is not None
    committed = {e["task"] for e in ok(run.events())}
    assert 8 <= len(committed) < run.shards and not (tmp_path / "out").exists()
    # no process of the dead coordinator survives on any host; committed outputs are kept
    kept = settle(healed)
    assert kept and all(v == [first.name] for v in kept.values()), kept
    resumed = Run(hosts, job, corpus, tmp_path / "out", env, "--no-speculation", "--resume")
    assert resumed.wait() == 0, resumed.stderr
    evs = resumed.events()
    assert {e["task"] for e in starts(evs)}.isdisjoint(committed)
    assert len(starts(evs)) == run.shards - len(committed)  # nothing committed is redone
    summary = assert_same(resumed, clean, counters=False)
    assert summary["counters"]["maps_reused"] == len(committed)
    assert wait_clean(healed) == {}  # the resumed run's success removed what was kept


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_remote_work_and_leaves_nothing(
        sig: int, code: int, hosts: Path, healed: Lan, job: Path, corpus: Path,
        tmp_path: Path, env: dict[str, str]) -> None:
    run = Run(hosts, job, corpus, tmp_path / "out", env)
    run.until_ok(3)
    run.proc.send_signal(sig)
    t0 = time.monotonic()
    assert run.wait(60) == code, run.stderr
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert wait_clean(healed, timeout=15) == {}
    assert run.summary()["status"] == "interrupted"


# --------------------------------------------------------------------------- round two (issue 13)
#
# Already covered above: a frozen host (test_frozen_host_...), a slow host (test_slow_host_...),
# a reducer host lost mid-reduce, a host lost after its maps, one host's disk full, corruption
# (truncated map output, damaged cached shards); elsewhere: an unwritable workdir and a changed
# host key (test_ssh_run.py), input changed while mapping (tests/test_cli.py).


def one_line(err: str) -> str:
    """The only line of ``err`` (a run's stderr under -q, or a cron job's mail)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def hosts_file(lan: Lan, path: Path, names: list[str] | None = None,
               extra: str = "", **defaults: object) -> Path:
    """A hosts file for some hosts of ``lan`` (all by default), plus raw TOML ``extra``."""
    lan.write_hosts_toml(path, **defaults)
    head, *tables = path.read_text().split("[[host]]")
    keep = [t for t in tables if names is None or any(f'name = "{n}"' in t for n in names)]
    path.write_text(head + "".join("[[host]]" + t for t in keep) + extra)
    return path


def test_flapping_host_is_excluded_and_the_output_is_exact(
        hosts: Path, healed: Lan, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    # its link goes down for 4 s and up for 3 s, over and over: never silent long enough to be
    # lost (10 s), but after 3 dropouts (~20 s) the run stops using it. The clean run takes
    # ~55 s here (delay 0.06 s a record): at 0.04 s a fast run could end before the third one
    run = Run(hosts, job, corpus, tmp_path / "out", env, "-p", "delay=0.06")
    evs = run.until_ok(2)
    victim = next(e["host"] for e in ok(evs))
    healed[victim].flap(down=4, up=3)
    t_flap = time.time()
    assert run.wait(240) == 0, run.stderr
    healed[victim].flap_stop()
    evs = run.events()
    assert len(host_lost(evs)) == 1, (time.time() - t_flap, host_lost(evs), run.stderr[-3000:])
    (lost,) = host_lost(evs)
    assert lost["host"] == victim and "keeps dropping out" in lost["reason"], lost
    assert "excluded" in lost["reason"] and lost["ts"] - t_flap < 40, (lost, t_flap)
    assert_same(run, clean)
    assert not any(e["host"] == victim for e in starts(evs) + starts(evs, "reduce")
                   if e["ts"] > lost["ts"])
    assert f"host {victim} keeps dropping out" in run.stderr, run.stderr
    settle(healed, timeout=45)  # cut off at times, its agent may keep outputs for a resume
    again = Run(hosts, job, corpus, tmp_path / "again", env, "-p", "delay=0")
    assert again.wait() == 0, again.stderr  # ... which the next run removes
    assert wait_clean(healed) == {}


def test_a_flapping_last_host_is_kept(hosts: Path, healed: Lan, job: Path, corpus: Path,
                                      clean: dict[str, object], tmp_path: Path,
                                      env: dict[str, str]) -> None:
    only = hosts_file(healed, tmp_path / "hosts.toml", ["h3"])
    run = Run(only, job, corpus, tmp_path / "out", env, "-p", "delay=0.015", "--no-speculation")
    run.until_ok(1)
    # up long enough for TCP to catch up each time: with nowhere else to go, it has to work
    healed["h3"].flap(down=3.5, up=5)
    assert run.wait(240) == 0, run.stderr
    healed["h3"].flap_stop()
    assert "host h3 keeps dropping out" in run.stderr, run.stderr
    assert "but it is the last usable host: the run carries on with it" in run.stderr
    assert not host_lost(run.events())
    assert_same(run, clean)
    assert wait_clean(healed, timeout=45) == {}


def test_every_disk_full_fails_with_one_line_and_leaves_nothing(
        hosts: Path, healed: Lan, job: Path, corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    fresh = make_corpus(tmp_path / "corpus", os.getpid() + 2)  # its shards must be sent
    for h in healed.hosts:  # 1 MiB, 832 KiB taken: room for a few shards, then none
        h.small_disk(1)
        h.run("dd if=/dev/zero of=/srv/mapred/filler bs=64k count=13 2>/dev/null", check=True)
    t0 = time.monotonic()
    run = Run(hosts, job, fresh, tmp_path / "out", env, "-p", "delay=0", "-q")
    assert run.wait(120) == 1, run.stderr
    line = one_line(run.stderr)
    assert line.startswith("mapred: error: map task m") and " failed 4 times: " in line, line
    assert ("no space left on device on every host: h1, h2, h3 (workdir /srv/mapred)"
            in line), line
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    fails = [e for e in run.events() if e["event"] == "task_end" and e["outcome"] == "failed"]
    assert {e["host"] for e in fails} == {"h1", "h2", "h3"}, fails
    assert wait_clean(healed) == {}
    # full to the last byte: no host can even start the run there, the same line, at once
    for h in healed.hosts:
        h.run("dd if=/dev/zero of=/srv/mapred/filler2 bs=64k 2>/dev/null; true")
    t0 = time.monotonic()
    proc = mapred("run", job, fresh, "-o", tmp_path / "out", "--hosts", hosts, "-q", env=env,
                  check=False, timeout=60)
    assert proc.returncode == 1 and time.monotonic() - t0 < 20, proc.stderr
    assert one_line(proc.stderr.decode()) == (
        "mapred: error: no space left on device on every host: h1, h2, h3 (workdir "
        "/srv/mapred); free space there, or set workdir in the hosts file to a larger disk")
    assert not (tmp_path / "out").exists()
    for h in healed.hosts:
        h.small_disk_clear()
    assert wait_clean(healed) == {}


def test_a_missing_python_is_refused_before_anything_is_sent(
        lan: Lan, lan_mapred: str, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    workdir = f"{WORKDIR}/fresh-{uuid.uuid4().hex[:8]}"
    broken = hosts_file(lan, tmp_path / "hosts.toml", ["h2", "h3"], extra=(
        f'\n[[host]]\nname = "h1"\naddress = "{lan["h1"].address}"\n'
        f'python = "/nonexistent/python3"\nworkdir = "{workdir}"\n'))
    said = ("host h1: python /nonexistent/python3 cannot run there: No such file or directory "
            "(the hosts file's 'python'; `mapred hosts setup` installs one and prints the line "
            "to use)")
    run = Run(broken, job, corpus, tmp_path / "out", env, "-p", "delay=0")
    assert run.wait() == 0, run.stderr
    assert_same(run, clean)
    warned = [ln for ln in run.stderr.splitlines() if "h1" in ln]
    assert warned == [f"mapred: warning: skipping {said}"], run.stderr
    assert lan["h1"].run(["test", "-e", workdir]).returncode != 0  # nothing was sent there
    proc = mapred("hosts", "check", "--hosts", broken, env=env, check=False)
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 1, out
    (h1,) = [ln for ln in out if ln.startswith("h1 ")]
    assert f"FAIL  {said}  " in h1, h1  # the same words as the run's
    # no host with a python: exit 3 before anything is sent, one line naming each host
    nowhere = hosts_file(lan, tmp_path / "none.toml", python="/nonexistent/python3",
                         workdir=workdir)
    t0 = time.monotonic()
    proc = mapred("run", job, corpus, "-o", tmp_path / "out2", "--hosts", nowhere, "-q", env=env,
                  check=False, timeout=60)
    line = one_line(proc.stderr.decode())
    assert proc.returncode == 3 and time.monotonic() - t0 < 15, line
    for h in ("h1", "h2", "h3"):
        assert f"host {h}: python /nonexistent/python3 cannot run there" in line, line
    for h in lan.hosts:
        assert h.run(["test", "-e", workdir]).returncode != 0
    assert wait_clean(lan) == {}


def test_an_unreachable_address_is_a_clear_error_within_15s_and_the_others_carry_on(
        lan: Lan, lan_mapred: str, job: Path, corpus: Path, clean: dict[str, object],
        tmp_path: Path, env: dict[str, str]) -> None:
    silent, unrouted = lan.unused_address(0), lan.unused_address(1)
    lan.blackhole(silent)  # packets to it vanish: only the connect timeout ends the wait
    try:
        mixed = hosts_file(lan, tmp_path / "hosts.toml", extra=(
            f'\n[[host]]\nname = "h8"\naddress = "{unrouted}"\n'
            f'\n[[host]]\nname = "h9"\naddress = "{silent}"\nconnect_timeout = 4\n'))
        t0 = time.time()
        run = Run(mixed, job, corpus, tmp_path / "out", env, "-p", "delay=0",
                  "--log-format", "json")
        assert run.wait() == 0, run.stderr
        assert_same(run, clean)
        logged = [json.loads(ln) for ln in run.stderr.splitlines()]
        skipped = {d["msg"].split()[2]: d for d in logged if d["msg"].startswith("skipping ")}
        assert set(skipped) == {"h8", "h9"}, logged
        assert skipped["h8"]["msg"] == (
            f"skipping host h8 (root@{unrouted}:22): cannot connect: No route to host (nothing "
            "answers at that address: is it right, and is the host up?)")
        assert skipped["h9"]["msg"] == (
            f"skipping host h9 (root@{silent}:22): cannot connect: nothing answered within 4s "
            "(connect_timeout)")
        assert skipped["h9"]["ts"] - t0 < 4 + 5 and skipped["h8"]["ts"] - t0 < 15, skipped
        proc = mapred("hosts", "check", "--hosts", mixed, env=env, check=False, timeout=60)
        out = proc.stdout.decode()
        assert proc.returncode == 1 and out.count("FAIL") == 2, out
        assert "nothing answered within 4s" in out and "No route to host" in out, out
        # the only host, nothing answering, the default connect timeout: exit 3 within 15 s
        alone = hosts_file(lan, tmp_path / "alone.toml", [], extra=(
            f'\n[[host]]\nname = "h9"\naddress = "{silent}"\n'))
        t0 = time.time()
        proc = mapred("run", job, corpus, "-o", tmp_path / "out2", "--hosts", alone, "-q",
                      env=env, check=False, timeout=60)
        assert proc.returncode == 3 and time.time() - t0 < 15, proc.stderr
        assert one_line(proc.stderr.decode()) == (
            f"mapred: error: no usable host: host h9 (root@{silent}:22): cannot connect: "
            "nothing answered within 10s (connect_timeout)")
        assert not (tmp_path / "out2").exists()
    finally:
        lan.unblackhole(silent)


@pytest.fixture
def locked_key(lan: Lan, tmp_path: Path) -> Iterator[Path]:
    """A passphrase-protected key every host of ``lan`` accepts (removed after the test)."""
    key = tmp_path / "locked_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-C", "locked",
                    "-f", key], check=True)
    pub = key.with_name(key.name + ".pub").read_text()
    files = [h.dir / "root/.ssh/authorized_keys" for h in lan.hosts]
    saved = [f.read_text() for f in files]
    for f, text in zip(files, saved, strict=True):
        f.write_text(text + pub)
    try:
        yield key
    finally:
        for f, text in zip(files, saved, strict=True):
            f.write_text(text)


def cron(argv: list[object], env: dict[str, str], timeout: float = 30,
         ) -> tuple[subprocess.CompletedProcess, float]:
    """``argv`` as cron runs it: its own session (no controlling terminal), stdin /dev/null,
    no agent, no askpass; (the process, seconds it took)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY",
                          "SSH_ASKPASS_REQUIRE")}
    t0 = time.monotonic()
    proc = subprocess.run(["setsid", "-w", *map(str, argv)], cwd=ROOT, env={**clean, **env},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return proc, time.monotonic() - t0


def test_a_passphrase_key_without_agent_under_cron_never_prompts(
        lan: Lan, lan_mapred: str, locked_key: Path, job: Path, corpus: Path,
        clean: dict[str, object], tmp_path: Path, env: dict[str, str]) -> None:
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", identity=str(locked_key))
    said = (f"the key {locked_key} is passphrase-protected and no ssh-agent holds it "
            "(SSH_AUTH_SOCK is not set); mapred never asks for a passphrase: add it to an agent "
            f"(ssh-add {locked_key}) or use a key without one")
    mapred_cli = [sys.executable, "-m", "mapred.cli.main"]
    proc, took = cron([*mapred_cli, "run", job, corpus, "-o", tmp_path / "out", "--hosts",
                       hosts], env)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and took < 10, (took, err)
    assert one_line(err) == f"mapred: error: hosts h1, h2, h3: {said}"
    assert not (tmp_path / "out").exists()
    proc, took = cron([*mapred_cli, "hosts", "check", "--hosts", hosts], env)
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 3 and took < 10, out
    assert all(f"FAIL  host {h.name}: {said}" in ln for h, ln in zip(lan.hosts, out,
                                                                  strict=True)), out
    # the other SSH path, OpenSSH (rsync, the control master): the same options fail the same
    from mapred.cluster.hosts import load_hosts, resolve_ssh, rsync_rsh

    target = resolve_ssh(load_hosts(hosts).hosts[0])
    proc, took = cron(["rsync", "-e", rsync_rsh(target), "--list-only",
                       f"{target.hostname}:/srv/"], env)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and took < 10, (took, err)
    assert "Permission denied (publickey)" in err and "passphrase" not in err.lower(), err
    # with an agent that holds the key, both paths use it: the run works, still unattended
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
        askpass.chmod(0o700)
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", locked_key], check=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass),
                            "SSH_ASKPASS_REQUIRE": "force"}, timeout=20, start_new_session=True)
        proc, took = cron([*mapred_cli, "run", job, corpus, "-o", tmp_path / "out", "--hosts",
                           hosts, "--shard-size", SHARD, "--reducers", REDUCERS, "-p",
                           "delay=0", "-q"], {**env, "SSH_AUTH_SOCK": str(sock)}, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert parts(tmp_path / "out") == clean["parts"]  # part files came back over rsync
    finally:
        agent.terminate()
        agent.wait()
    assert wait_clean(lan) == {}


HOT_JOB = '''\
# one key in 30% of the records; its values are the rest of the line (no combiner)
def mapper(line):
    key, _, rest = line.partition(b" ")
    yield key, rest


def reducer(key, values):
    n = total = 0
    for v in values:
        n += 1
        total += len(v)
    yield key, (n, total)
'''
WORKER_FOOTPRINT = 160 << 20  # README "Memory": a worker's own peak RSS beyond its budget


def test_a_hot_key_under_a_memory_cap_stays_within_it(
        lan: Lan, lan_mapred: str, tmp_path: Path, env: dict[str, str]) -> None:
    rng = random.Random(os.getpid())
    payloads = ["".join(rng.choices("abcdefghij klmnopqrstuvwxyz", k=250)) for _ in range(997)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines, want = [], {}
    for _ in range(300_000):  # ~77 MB; the hot key in 30% of the lines
        key = "HOT" if rng.random() < 0.3 else f"k{rng.randrange(50_000):05d}"
        rest = payloads[rng.randrange(len(payloads))]
        lines.append(f"{key} {rest}\n")
        n, total = want.get(key, (0, 0))
        want[key] = (n + 1, total + len(rest))
    (corpus / "skewed.txt").write_text("".join(lines))
    job = tmp_path / "hotkey.py"
    job.write_text(HOT_JOB)
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", memory="64M")
    for h in lan.hosts:  # compiling numba's kernels peaks once at ~400 MiB: not this test's
        h.run([lan.python, "-m", "mapred.worker.main", "--warm"], check=True, timeout=300)
    # shards as large as they get (64 MiB): the first holds ~2.5x its worker's share of the cap
    # in values (uncapped, that worker peaks at ~230 MiB; capped, ~180)
    run = Run(hosts, job, corpus, tmp_path / "out", env, "--shard-size", "64M", "--reducers", "3")
    assert run.wait(300) == 0, run.stderr
    got = sorted(b"".join(parts(tmp_path / "out").values()).splitlines())
    assert got == sorted(f"{k}\t{n}\t{t}".encode() for k, (n, t) in want.items())
    summary = run.summary()
    assert summary["counters"]["spills"] > summary["counters"]["map_tasks"]  # the cap worked
    cap = (64 << 20) // 2  # per worker: the host's memory over its 2 cores
    peaks = {(e["host"], e["slot"]): e["maxrss"] for e in run.events()
             if e["event"] == "task_end" and e["outcome"] == "ok"}
    assert peaks and all(p <= cap + WORKER_FOOTPRINT for p in peaks.values()), \
        {k: p >> 20 for k, p in peaks.items()}
    assert wait_clean(lan) == {}
