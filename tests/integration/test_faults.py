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
        self.argv = [sys.executable, "-m", "mapred.cli", "run", str(job), str(corpus), "-o",
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
    h.run([lan.python, "-m", "mapred.fetch", "agent"], input=cfg + "\n", timeout=60)


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
