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
4. **Every fault of issue 13, side by side** (``--table``): the same job (a sleep per record, so
   each host has a fixed capacity) with each fault injected for real, its wall time as a ratio
   to the clean run's (the median of clean runs spread over the bench), as a Markdown table
   (README "Faults, measured"). Runs that must fail fast show their time to the error.

    sudo .venv/bin/python bench/faults_bench.py --table        # only 4 (~10 minutes here)

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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from lanlib import WORKDIR, Lan  # noqa: E402
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

    def __init__(self, args: list[str], state: Path, cron: bool = False) -> None:
        self.runs = state / "mapred" / "runs"
        self.before = set(self.runs.iterdir()) if self.runs.exists() else set()
        self.t0 = time.monotonic()
        env = {**os.environ, "XDG_STATE_HOME": str(state)}
        if cron:  # as under cron: no agent, no askpass, no terminal
            for k in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY"):
                env.pop(k, None)
        self.proc = subprocess.Popen([PY, "-m", "mapred.cli.main", "run", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=cron)

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


# --------------------------------------------------------------------------- 4. the fault table

FAULT_JOB = '''\
import time

DELAY = 0.02   # seconds per record
RDELAY = 0.0   # seconds per key in the reducer


def init(params):
    global DELAY, RDELAY
    DELAY = float(params.get("delay", DELAY))
    RDELAY = float(params.get("rdelay", RDELAY))


def mapper(line):
    time.sleep(DELAY)
    for w in line.split():
        yield w, 1


def reducer(key, values):
    if RDELAY:
        time.sleep(RDELAY)
    yield key, sum(values)
'''
HOT_JOB = '''\
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
TABLE_ARGS = ["--shard-size", "20K", "--reducers", "4", "-p", "delay=0.02", "-p", "rdelay=0.002",
              "-q"]


@dataclass
class Scenario:
    """One row: the hosts file to use, what to do before and during the run, and after."""

    name: str
    hosts: Path
    fault: Callable[[Run], None] | None = None
    before: Callable[[], None] | None = None
    expect: int = 0
    args: list[str] = field(default_factory=list)
    corpus: Path | None = None
    job: Path | None = None
    baseline: str = "clean"  # the row whose wall time this one is compared with


def hosts_variant(lan: Lan, path: Path, keep: list[str] | None = None, extra: str = "",
                  **defaults: Any) -> Path:
    """A hosts file for some of ``lan``'s hosts (all by default) plus raw TOML ``extra``."""
    lan.write_hosts_toml(path, **defaults)
    head, *tables = path.read_text().split("[[host]]")
    kept = [t for t in tables if keep is None or any(f'name = "{n}"' in t for n in keep)]
    path.write_text(head + "".join("[[host]]" + t for t in kept) + extra)
    return path


def running(evs: list[dict[str, Any]], kind: str) -> dict[str, str]:
    ended = {e["attempt"] for e in evs if e["event"] == "task_end"}
    return {e["attempt"]: e["host"] for e in evs if e["event"] == "task_start"
            and e["kind"] == kind and e["attempt"] not in ended}


def fault_scenarios(lan: Lan, tmp: Path, hosts: Path, corpus: Path) -> list[Scenario]:
    h1, h2, h3 = lan.hosts
    out: list[Scenario] = []

    def freeze(run: Run) -> None:  # 1: SIGSTOP for 30 s mid-map, then SIGCONT
        run.until(lambda evs: len(committed(evs)) >= 4)
        victim = lan[next(iter(running(run.events(), "map").values()))]
        victim.freeze()
        threading.Timer(30, victim.thaw).start()

    out.append(Scenario("1 frozen host (30 s, mid-map)", hosts, freeze))
    two = hosts_variant(lan, tmp / "two.toml", ["h1", "h2"])
    out.append(Scenario("2 without the slow host (h1, h2 only)", two, before=lambda: (
        clear_host_caches(lan))))
    out.append(Scenario("2 slow host (h3 at 50 kbit/s)", hosts, before=lambda: (
        clear_host_caches(lan), h3.netem(rate="50kbit")),
        baseline="2 without the slow host (h1, h2 only)"))

    def kill_reducer(run: Run) -> None:
        run.until(lambda evs: bool(running(evs, "reduce")))
        time.sleep(0.5)
        hosts_now = list(running(run.events(), "reduce").values())
        if hosts_now:
            lan[hosts_now[0]].kill()

    out.append(Scenario("3 reducer host killed mid-reduce", hosts, kill_reducer))

    def kill_after_maps(run: Run) -> None:
        run.until(lambda evs: any(e["event"] == "phase" and e.get("phase") == "reduce"
                                  for e in evs))
        lan[committed(run.events())[0]["host"]].kill()

    out.append(Scenario("4 host killed after the maps, before the shuffle", hosts,
                        kill_after_maps))

    def flap(run: Run) -> None:
        run.until(lambda evs: len(committed(evs)) >= 2)
        lan[committed(run.events())[0]["host"]].flap(down=4, up=3)

    out.append(Scenario("5 flapping host (link 4 s down, 3 s up)", hosts, flap))

    def fill(*victims: Any, blocks: int) -> None:
        for h in victims:
            h.small_disk(1)
            h.run(f"dd if=/dev/zero of={WORKDIR}/filler bs=64k count={blocks} 2>/dev/null")

    out.append(Scenario("6 one host's disk full (1 MiB)", hosts, before=lambda: fill(h2,
                                                                                  blocks=12)))
    out.append(Scenario("6b every host's disk full", hosts, expect=1,
                        before=lambda: fill(h1, h2, h3, blocks=13)))
    out.append(Scenario("7 one host's workdir unwritable", hosts_variant(
        lan, tmp / "nowrite.toml", ["h2", "h3"], extra=(
            f'\n[[host]]\nname = "h1"\naddress = "{h1.address}"\n'
            'workdir = "/opt/mapred-nowhere/wd"\n'))))
    out.append(Scenario("7b one host's python missing", hosts_variant(
        lan, tmp / "nopython.toml", ["h2", "h3"], extra=(
            f'\n[[host]]\nname = "h1"\naddress = "{h1.address}"\n'
            'python = "/nonexistent/python3"\n'))))
    silent = lan.unused_address(0)
    out.append(Scenario("8 an address nothing answers (4th host, default timeout)",
                        hosts_variant(lan, tmp / "unreachable.toml", extra=(
                            f'\n[[host]]\nname = "h9"\naddress = "{silent}"\n')),
                        before=lambda: lan.blackhole(silent)))
    known = tmp / "known_hosts_changed"
    lines = lan.known_hosts.read_text().splitlines()
    h2_key = next(ln for ln in lines if ln.startswith(h2.address + " "))
    known.write_text("\n".join([h1.address + h2_key[len(h2.address):], *lines[1:]]) + "\n")
    out.append(Scenario("9 changed host key (h1)", lan.write_hosts_toml(
        tmp / "changed.toml", known_hosts=str(known)), expect=2))
    key = tmp / "locked_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass phrase", "-f", key],
                       check=True)
    out.append(Scenario("10 passphrase key, no agent, no terminal", lan.write_hosts_toml(
        tmp / "locked.toml", identity=str(key)), expect=2))
    changing = tmp / "changing-corpus"

    def copy_corpus() -> None:  # new bytes: no host has its shards, each is read when staged
        shutil.rmtree(changing, ignore_errors=True)
        shutil.copytree(corpus, changing)
        for f in changing.iterdir():
            with open(f, "a") as out:
                out.write(f"{uuid.uuid4().hex}\n")

    def append(run: Run) -> None:
        run.until(lambda evs: len(committed(evs)) >= 2)
        with open(sorted(changing.iterdir())[-1], "a") as f:  # its shards are staged last
            f.write("appended while the run maps\n")

    out.append(Scenario("11 input file appended to mid-map", hosts, append, before=copy_corpus,
                        expect=1, corpus=changing))
    flip = ("import os, sys\nfor n in os.listdir(sys.argv[1]):\n"
            "    p = os.path.join(sys.argv[1], n)\n    with open(p, 'r+b') as f:\n"
            "        b = f.read(1)\n        f.seek(0)\n        f.write(bytes([b[0] ^ 1]))\n")

    def damage() -> None:
        for h in lan.hosts:
            h.run([lan.python, "-c", flip, f"{WORKDIR}/cache"])

    out.append(Scenario("12 every cached shard damaged", hosts, before=damage))
    return out


def hot_scenarios(lan: Lan, tmp: Path) -> list[Scenario]:
    """13: the hot-key job on its own corpus, under memory = "64M" and without a cap."""
    import random

    corpus = tmp / "hot-corpus"
    if not corpus.exists():
        corpus.mkdir()
        rng = random.Random(13)
        payloads = ["".join(rng.choices("abcdefghij klmnopqrstuvwxyz", k=250))
                    for _ in range(997)]
        with open(corpus / "skewed.txt", "w") as f:
            for _ in range(300_000):
                key = "HOT" if rng.random() < 0.3 else f"k{rng.randrange(50_000):05d}"
                f.write(f"{key} {payloads[rng.randrange(len(payloads))]}\n")
    job = tmp / "hotkey.py"
    job.write_text(HOT_JOB)
    args = ["--shard-size", "64M", "--reducers", "3", "-q"]
    free = Scenario("13 hot key (30% of 77 MB), no memory cap", lan.write_hosts_toml(
        tmp / "nocap.toml"), args=args, corpus=corpus, job=job, baseline="")
    capped = Scenario('13 hot key, memory = "64M" per host', lan.write_hosts_toml(
        tmp / "cap.toml", memory="64M"), args=args, corpus=corpus, job=job,
        baseline=free.name)
    return [free, capped]


def run_scenario(lan: Lan, sc: Scenario, tmp: Path, job: Path, corpus: Path) -> dict[str, Any]:
    state = tmp / "state-table"
    out = tmp / f"table-{uuid.uuid4().hex[:8]}"
    env_args = sc.args or TABLE_ARGS
    args = [str(sc.job or job), str(sc.corpus or corpus), "-o", str(out), "--hosts",
            str(sc.hosts), *env_args]
    try:
        if sc.before is not None:
            sc.before()
        run = Run(args, state, cron=sc.name.startswith("10 "))
        if sc.fault is not None:
            sc.fault(run)
        code, took = run.wait()
        err = run.stderr()
    finally:
        lan.heal()  # thawed, link up, no shaping, disks back, killed hosts restarted
        lan.unblackhole(lan.unused_address(0))
        time.sleep(1)
    if code != sc.expect:
        log(f"  {sc.name}: exit {code}, expected {sc.expect}: {err.strip()[-300:]}")
    row: dict[str, Any] = {"scenario": sc.name, "exit": code, "wall_s": round(took, 2)}
    d = run.dir
    summary = json.loads((d / "summary.json").read_text()) if d is not None and (
        d / "summary.json").exists() else {}
    c = summary.get("counters", {})
    if code == 0:
        notes = [f"{c[k]} {label}" for k, label in (
            ("hosts_lost", "host lost"), ("maps_rerun", "maps rerun"), ("retries", "retries"),
            ("backups", "backups")) if c.get(k)]
        lost = [e for e in run.events() if e["event"] == "host_lost"]
        if lost:
            start = next(e["ts"] for e in run.events() if e["event"] == "run_start")
            notes.append(f"lost at +{lost[0]['ts'] - start:.1f}s")
        peaks = [e["maxrss"] for e in run.events() if e.get("maxrss")]
        if peaks and sc.name.startswith("13"):
            notes.append(f"worker peak RSS {max(peaks) >> 20} MiB")
        row["notes"] = ", ".join(notes)
    else:
        errors = [ln for ln in err.splitlines() if ln.startswith("mapred: error: ")]
        row["notes"] = (errors or err.strip().splitlines() or [""])[0][:110]
    shutil.rmtree(out, ignore_errors=True)
    return row


def bench_table(lan: Lan, hosts: Path, tmp: Path, repeat: int) -> dict[str, Any]:
    job = tmp / "faultjob.py"
    job.write_text(FAULT_JOB)
    corpus = sleep_corpus(tmp / "table-corpus", files=4)
    clean = Scenario("clean", hosts)
    rows: list[dict[str, Any]] = []
    plan = fault_scenarios(lan, tmp, hosts, corpus)
    middle = len(plan) // 2
    order = [clean, *plan[:middle], clean, *plan[middle:], clean, *hot_scenarios(lan, tmp)]
    run_scenario(lan, clean, tmp, job, corpus)  # warm: caches, kernels
    for sc in order:
        for _ in range(repeat):
            row = run_scenario(lan, sc, tmp, job, corpus)
            rows.append({**row, "baseline": sc.baseline})
            log(f"  {row['scenario']}: exit {row['exit']}, {row['wall_s']:.1f}s  {row['notes']}")
    walls: dict[str, list[float]] = {}
    for r in rows:
        walls.setdefault(r["scenario"], []).append(r["wall_s"])
    table, seen = [], set()
    for r in rows:
        if r["scenario"] in seen:
            continue
        seen.add(r["scenario"])
        wall = statistics.median(walls[r["scenario"]])
        base = statistics.median(walls[r["baseline"]]) if r["baseline"] else None
        table.append({**r, "wall_s": wall, "ratio": wall / base if base else None})
    print(markdown_table(table))
    return {"rows": rows, "table": table}


def markdown_table(table: list[dict[str, Any]]) -> str:
    lines = ["| scenario | exit | wall | x baseline | what it cost |", "|---|---|---|---|---|"]
    for r in table:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        base = "" if r["baseline"] in ("clean", "") else f" (x {r['baseline'].split(' (')[0]})"
        lines.append(f"| {r['scenario']} | {r['exit']} | {r['wall_s']:.1f} s | {ratio}{base} | "
                     f"{r['notes']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def sleep_corpus(root: Path, files: int = 6) -> Path:
    if root.exists():
        return root
    root.mkdir(parents=True)
    rng = random.Random(1)
    words = [f"w{i:05d}" for i in range(5000)]
    for f in range(files):
        lines = [" ".join(rng.choices(words, k=12)) for _ in range(600)]
        (root / f"f{f}.txt").write_text("\n".join(lines) + "\n")
    return root


class _Done(Exception):
    """--table: the table is made, skip the rest."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=125, help="word count corpus size")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", action="store_true",
                    help="only 4: every fault of issue 13 against the clean run")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mapred-faults-bench-"))
    results: dict[str, Any] = {}
    try:
        with Lan.up(3, tmp / "lan") as lan:
            install_mapred(lan, tmp)
            hosts = lan.write_hosts_toml(tmp / "hosts.toml")
            if a.table:
                log(f"4. every fault against the clean run ({a.repeat} run(s) each)")
                results["table"] = bench_table(lan, hosts, tmp, a.repeat)
                raise _Done
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
    except _Done:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
