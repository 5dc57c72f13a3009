#!/usr/bin/env python3
"""Fault tolerance benchmarks on a 3-host test LAN (tests/lanlib.py): what a fault costs.

    sudo .venv/bin/python bench/faults_bench.py [--mb 125] [--repeat 2] [--json out.json]

1. **Losing 1 of 3 hosts halfway** (SIGKILL of every process of the host when half of the map
   tasks have committed), against the clean run, both with empty shard caches (shipping
   included): the numba word count of ~125 MB of real text, and a job whose per-record cost is
   a sleep (so each host has a fixed capacity: on this machine the three "hosts" share its CPU
   cores, and losing one of them loses no CPU at all for the CPU-bound word count).
2. **Cut link detection**: the host's link is taken down (packets vanish, no reset) mid-map;
   the time from the cut to the run's ``host_lost`` event, with the default settings.
3. **Resume after a coordinator crash halfway** (SIGKILL of ``mapred run`` when half of the map
   tasks have committed), on the LAN hosts and locally: map tasks run again by ``--resume``
   beyond those that had not committed, and map work lost in flight at the crash.

Needs root (network namespaces). Installs this tree's mapred into the LAN hosts' venv.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from lanlib import Lan  # noqa: E402
from ssh_bench import clear_host_caches, install_mapred, log, real_text_corpus  # noqa: E402

PY = sys.executable
SLEEP_JOB = '''\
import time

DELAY = 0.02


def init(params):
    global DELAY
    DELAY = float(params.get("delay", DELAY))


def mapper(line):
    time.sleep(DELAY)
    for w in line.split():
        yield w, 1


def reducer(key, values):
    yield key, sum(values)
'''


class Run:
    """``mapred run`` in the background, with its journal at hand."""

    def __init__(self, args: list[str], state: Path) -> None:
        self.runs = state / "mapred" / "runs"
        self.before = set(self.runs.iterdir()) if self.runs.exists() else set()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([PY, "-m", "mapred.cli", "run", *args], cwd=ROOT,
                                     env={**os.environ, "XDG_STATE_HOME": str(state)},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    @property
    def dir(self) -> Path | None:
        new = sorted(d for d in self.runs.iterdir() if d not in self.before) \
            if self.runs.exists() else []
        return new[0] if new else None

    def events(self) -> list[dict[str, Any]]:
        d = self.dir
        out = []
        if d is not None and (d / "events.jsonl").exists():
            for line in (d / "events.jsonl").read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def shards(self) -> int:
        d = self.dir
        assert d is not None
        return len(json.loads((d / "plan.json").read_text())["shards"])

    def until(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dir is not None and (self.dir / "plan.json").exists() and pred(self.events()):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"run ended early: {self.stderr()}")
            time.sleep(0.02)
        raise RuntimeError("timed out")

    def half_mapped(self) -> None:
        self.until(lambda evs: True)  # the plan is written
        n = self.shards()
        self.until(lambda evs: len(committed(evs)) >= n // 2)

    def wait(self) -> tuple[int, float]:
        code = self.proc.wait(timeout=1800)
        return code, time.monotonic() - self.t0

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def committed(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == "task_end" and e["kind"] == "map"
            and e["outcome"] == "ok"]


def timed(args: list[str], state: Path, fault: Callable[[Run], None] | None = None,
          lan: Lan | None = None) -> tuple[float, Run]:
    if lan is not None:
        clear_host_caches(lan)
    run = Run(args, state)
    if fault is not None:
        fault(run)
    code, took = run.wait()
    if code != 0:
        raise RuntimeError(f"mapred exited {code}: {run.stderr()}")
    return took, run


# --------------------------------------------------------------------------- 1. a host lost


def bench_host_loss(lan: Lan, hosts: Path, tmp: Path, job: str, corpus: Path,
                    extra: list[str], repeat: int) -> dict[str, Any]:
    state = tmp / f"state-loss-{Path(job).stem}"
    clean, faulty, lost_after = [], [], []
    for i in range(repeat):
        args = [job, str(corpus), "--hosts", str(hosts), *extra]
        took, _ = timed([*args, "-o", str(tmp / f"clean-{Path(job).stem}-{i}")], state, lan=lan)
        clean.append(took)
        victim = lan.hosts[i % len(lan.hosts)]

        def kill_halfway(run: Run, victim: Any = victim) -> None:
            run.half_mapped()
            lost_after.append(time.monotonic() - run.t0)
            victim.kill()

        try:
            took, run = timed([*args, "-o", str(tmp / f"lost-{Path(job).stem}-{i}")], state,
                              kill_halfway, lan=lan)
        finally:
            lan.heal()
        faulty.append(took)
        summary = json.loads((run.dir / "summary.json").read_text())  # type: ignore[operator]
        log(f"  {Path(job).stem}: clean {clean[-1]:.1f}s, {victim.name} killed at "
            f"{lost_after[-1]:.1f}s -> {took:.1f}s ({took / clean[-1]:.2f}x), "
            f"{summary['counters']['maps_rerun']} committed maps rerun")
    return {"clean_s": clean, "host_lost_s": faulty, "killed_at_s": lost_after,
            "ratio": [f / c for f, c in zip(faulty, clean, strict=True)],
            "ratio_median": statistics.median(f / c for f, c in zip(faulty, clean, strict=True))}


# --------------------------------------------------------------------------- 2. a cut link


def bench_cut_link(lan: Lan, hosts: Path, tmp: Path, job: Path, corpus: Path,
                   repeat: int) -> dict[str, Any]:
    state = tmp / "state-cut"
    detect = []
    for i in range(repeat):
        victim = lan.hosts[i % len(lan.hosts)]
        cut: list[float] = []

        def cut_mid_map(run: Run, victim: Any = victim, cut: list[float] = cut) -> None:
            run.until(lambda evs: len(committed(evs)) >= 4)
            victim.link_down()
            cut.append(time.time())

        try:
            _, run = timed([str(job), str(corpus), "--hosts", str(hosts), "--shard-size", "20K",
                            "-o", str(tmp / f"cut-{i}")], state, cut_mid_map)
        finally:
            lan.heal()
        lost = [e for e in run.events() if e["event"] == "host_lost"]
        detect.append(lost[0]["ts"] - cut[0])
        log(f"  cut link of {victim.name}: lost after {detect[-1]:.2f}s ({lost[0]['reason']})")
    return {"detect_s": detect, "max_s": max(detect), "median_s": statistics.median(detect)}


# --------------------------------------------------------------------------- 3. resume


def bench_resume(tmp: Path, job: Path, corpus: Path, hosts: Path | None,
                 lan: Lan | None) -> dict[str, Any]:
    where = "lan" if hosts is not None else "local"
    state = tmp / f"state-resume-{where}"
    out = tmp / f"resume-{where}"
    args = [str(job), str(corpus), "-o", str(out), "--shard-size", "20K", "--no-speculation",
            *(["--hosts", str(hosts)] if hosts is not None else [])]
    run = Run(args, state)
    run.half_mapped()
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    evs = run.events()
    done = {e["task"] for e in committed(evs)}
    ended = {e["attempt"] for e in evs if e["event"] == "task_end"}
    in_flight = [e for e in evs if e["event"] == "task_start" and e["kind"] == "map"
                 and e["attempt"] not in ended]
    at_crash = evs[-1]["ts"]
    lost_work = sum(at_crash - e["ts"] for e in in_flight)  # seconds of mapping thrown away
    busy = sum(e["ts"] - s["ts"] for e in committed(evs)
               for s in evs if s["event"] == "task_start" and s["attempt"] == e["attempt"])
    total = run.shards()
    if lan is not None:
        time.sleep(2)  # the hosts notice and keep what was committed
    again = Run([*args, "--resume"], state)
    code, took = again.wait()
    if code != 0:
        raise RuntimeError(f"resume exited {code}: {again.stderr()}")
    evs2 = again.events()
    started = {e["task"] for e in evs2 if e["event"] == "task_start" and e["kind"] == "map"}
    redone = started & done
    per_task = busy / max(1, len(done))  # average map task duration
    result = {
        "map_tasks": total, "committed_before_crash": len(done),
        "run_by_resume": len(started), "committed_redone": len(redone),
        "in_flight_at_crash": len(in_flight),
        "map_work_redone_pct": 100.0 * (len(redone) * per_task + lost_work) / (total * per_task),
        "resume_s": took,
    }
    log(f"  {where}: {len(done)} of {total} maps committed before the crash, "
        f"{len(in_flight)} in flight; resume ran {len(started)} "
        f"({len(redone)} of them committed before): "
        f"{result['map_work_redone_pct']:.1f}% of the map work redone")
    return result


# --------------------------------------------------------------------------- main


def sleep_corpus(root: Path) -> Path:
    if root.exists():
        return root
    root.mkdir(parents=True)
    rng = random.Random(1)
    words = [f"w{i:05d}" for i in range(5000)]
    for f in range(6):
        lines = [" ".join(rng.choices(words, k=12)) for _ in range(600)]
        (root / f"f{f}.txt").write_text("\n".join(lines) + "\n")
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=125, help="word count corpus size")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mapred-faults-bench-"))
    results: dict[str, Any] = {}
    try:
        with Lan.up(3, tmp / "lan") as lan:
            install_mapred(lan, tmp)
            hosts = lan.write_hosts_toml(tmp / "hosts.toml")
            corpus = real_text_corpus(a.mb)
            job = tmp / "sleepcount.py"
            job.write_text(SLEEP_JOB)
            small = sleep_corpus(tmp / "sleep-corpus")
            log("warm-up (numba compiles the kernels on each host once)")
            timed(["wordcount", str(corpus), "-o", str(tmp / "warm"), "--hosts", str(hosts)],
                  tmp / "state-warm")
            log(f"1. losing 1 of 3 hosts halfway ({a.repeat} runs each)")
            results["host_loss_wordcount"] = bench_host_loss(
                lan, hosts, tmp, "wordcount", corpus, ["--reducers", "6"], a.repeat)
            results["host_loss_sleepjob"] = bench_host_loss(
                lan, hosts, tmp, str(job), small, ["--shard-size", "20K"], a.repeat)
            log("2. cut link detection")
            results["cut_link"] = bench_cut_link(lan, hosts, tmp, job, small, max(3, a.repeat))
            log("3. resume after a coordinator crash halfway")
            results["resume_lan"] = bench_resume(tmp, job, small, hosts, lan)
        results["resume_local"] = bench_resume(tmp, job, small, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
