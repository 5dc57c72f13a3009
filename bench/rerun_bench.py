#!/usr/bin/env python3
"""A rerun on an unchanged corpus over a 3-host test LAN: time and shard traffic of both runs.

    sudo .venv/bin/python bench/rerun_bench.py [--mb 40] [--reps 3] [--rate 100mbit] [--tree DIR]

Each repetition makes a corpus no host has cached (random words, a new seed), runs word count
on it twice (default shard size, so about three shards per core) and reports per run its wall
time and, per host, the shards sent from this machine, found cached, and copied from another
host (the stats line of ``-v``), and whether both outputs are the same bytes.

``--tree DIR`` runs another mapred tree (coordinator and hosts), e.g. a ``git archive`` of an
older commit, to compare. ``--rate`` caps every host's link (tc tbf, both directions): on this
machine's virtual links a copy between hosts costs next to nothing. The hosts use a venv of
their own (``--venv``), not the test suite's, so a benchmark of another tree never changes what
concurrent test runs install. A warm-up run first compiles the numba kernels on every host
(else the host that compiles first maps everything).
Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lanlib import Lan  # noqa: E402

PY = sys.executable
STATS = re.compile(r"host (\S+): shards sent (\d+) \((\d+) bytes\), already cached (\d+), "
                   r"copied from another host (\d+)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def install(lan: Lan, tree: Path, tmp: Path) -> None:
    """The tree's mapred (a wheel) and this machine's numpy, numba, mmh3 into the hosts' venv."""
    code = ("import sys; from pathlib import Path; from mapred.cli.hosts import build_wheel, "
            "pinned_requirements as p; print(build_wheel(Path(sys.argv[1]))); print(*p())")
    out = subprocess.run([PY, "-c", code, str(tmp / "wheel")], cwd="/", env=tree_env(tree),
                         check=True, capture_output=True, text=True).stdout.splitlines()
    pip = [lan.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *out[1].split()], check=True, cwd="/")
    subprocess.run([*pip, "--force-reinstall", "--no-deps", out[0]], check=True, cwd="/")


def corpus(root: Path, mbytes: float, seed: int, files: int = 8) -> Path:
    rng = random.Random(seed)
    words = [f"w{seed}x{i}" for i in range(20000)] + ["error", "the", "and"]
    root.mkdir(parents=True)
    per = int(mbytes * (1 << 20) / files)
    for f in range(files):
        lines, size = [], 0
        while size < per:
            lines.append(" ".join(rng.choices(words, k=12)) + "\n")
            size += len(lines[-1])
        (root / f"part{f}.txt").write_text("".join(lines))
    return root


def run(tree: Path, *args: str | Path, state: Path) -> tuple[float, dict[str, dict[str, int]]]:
    env = {**tree_env(tree), "XDG_STATE_HOME": str(state)}
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "mapred.cli.main", "run", *map(str, args), "-v"], cwd="/",
                          env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mapred run {args} failed: {proc.stderr}")
    stats = {m[1]: dict(zip(("sent", "bytes", "cached", "copied"), map(int, m.groups()[1:]),
                            strict=True)) for m in STATS.finditer(proc.stderr)}
    return round(took, 2), stats


def parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--rate", help="cap every host's link, e.g. 100mbit")
    ap.add_argument("--venv", type=Path, default=Path("/opt/mapred-lan/bench-venv"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    ok, why = Lan.available()
    if not ok:
        log(f"cannot run the test LAN here: {why}")
        return 2
    tree = a.tree.resolve()
    results: dict[str, Any] = {"tree": str(tree), "mb": a.mb, "rate": a.rate, "runs": []}
    with tempfile.TemporaryDirectory(prefix="mapred-rerun-bench-") as d, \
            Lan.up(3, Path(d) / "lan", venv=a.venv) as lan:
        tmp = Path(d)
        log(f"installing {tree} into the hosts' venv {a.venv} ...")
        install(lan, tree, tmp)
        hosts = lan.write_hosts_toml(tmp / "hosts.toml")
        if a.rate:
            for h in lan.hosts:
                h.netem(rate=a.rate)
        state = tmp / "state"
        warm = tmp / "warm"
        warm.mkdir()
        (warm / "w.txt").write_text("warm up the kernels on every host\n" * 1000)
        took = run(tree, "wordcount", warm, "-o", tmp / "warm-out", "--hosts", hosts,
                   "--shard-size", "4K", state=state)[0]
        log(f"warm-up: {took} s")
        for rep in range(a.reps):
            src = corpus(tmp / f"corpus{rep}", a.mb, seed=os.getpid() * 100 + rep)
            first = run(tree, "wordcount", src, "-o", tmp / f"o{rep}a", "--hosts", hosts,
                        state=state)
            again = run(tree, "wordcount", src, "-o", tmp / f"o{rep}b", "--hosts", hosts,
                        state=state)
            same = parts(tmp / f"o{rep}a") == parts(tmp / f"o{rep}b")
            row = {"bytes": sum(p.stat().st_size for p in src.iterdir()),
                   "first_s": first[0], "again_s": again[0], "first": first[1],
                   "again": again[1], "same_output": same}
            log(json.dumps(row))
            results["runs"].append(row)
    print(json.dumps(results, indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
