"""Micro-benchmark of the numba tier (mapred.kernels) on a ~500 MB real-text file.

    .venv/bin/python bench/kernel_micro.py [--file /tmp/kbench/corpus.txt] [--rounds 3]

Builds the file if it is missing (Python stdlib sources + /usr/share/doc prose, repeated as is,
lower- and upper-cased: 501 MB, 54.3M tokens, 2.23M distinct), then prints, median of
``--rounds`` rounds with the numba cache warm and ``LC_ALL=C wc -w`` timed in the same rounds:

* one thread: scan only, scan + KeyTable, partitions(2) + write_run, merge_runs_to_tsv;
* the whole pipeline as a fresh process (interpreter start-up and kernel loading included):
  2 map processes each taking half of the file, sort + write runs, then 2 reduce processes each
  merging one partition into TSV.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mapred import job as jobmod  # noqa: E402
from mapred import kernels as K  # noqa: E402

SCAN = jobmod.load(jobmod.resolve("wordcount"), {}).scan  # the bundled word count's kernel

WORK = "/tmp/kbench"
SEED = 12345


def build_corpus(path: str, target: int = 500 * 10**6) -> None:
    """Stdlib .py files and prose-like /usr/share/doc files, repeated (as is, lower, upper)."""
    parts = []
    for root, _, files in sorted(os.walk("/usr/share/doc")):
        for f in sorted(files):
            p = os.path.join(root, f)
            if os.path.islink(p) or os.path.splitext(f.removesuffix(".gz"))[1] not in (
                    "", ".txt", ".md", ".Debian", ".rst"):
                continue
            try:
                d = gzip.open(p).read() if f.endswith(".gz") else open(p, "rb").read()
            except Exception:  # noqa: BLE001,S112 - unreadable or not gzip: skip
                continue
            if d and sum(1 for b in d[:4096] if b < 9 or 13 < b < 32 or b == 127) <= 20:
                parts.append(d)
    pattern = os.path.join(sys.base_prefix, "lib", "python3.*", "**", "*.py")
    for p in sorted(glob.glob(pattern, recursive=True)):
        if "site-packages" not in p:
            with open(p, "rb") as f:
                parts.append(f.read())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written, rep = 0, 0
    with open(path + ".tmp", "wb") as out:
        while written < target:
            for d in parts:
                if written >= target:
                    break
                d = d if rep % 3 == 0 else d.lower() if rep % 3 == 1 else d.upper()
                out.write(d + b"\n")
                written += len(d) + 1
            rep += 1
    os.replace(path + ".tmp", path)


def warm_up() -> None:
    """Load (or compile, the first time) every kernel the benchmark uses."""
    buf = np.frombuffer(b"warm up the kernels\n", np.uint8)
    mm_path = os.path.join(WORK, "warm.txt")
    with open(mm_path, "wb") as f:
        f.write(b"warm up the kernels\n")
    for b in (buf, np.memmap(mm_path, dtype=np.uint8, mode="r")):
        table = K.KeyTable(b, K.AGG_SUM)
        K.aggregate_scan(SCAN, b, table)
        runs = table.partitions(2, SEED)
        for i, r in enumerate(runs):
            K.write_run(os.path.join(WORK, f"warm{i}.run"), r, K.AGG_SUM)
        with open(os.devnull, "wb") as f:
            K.merge_runs_to_tsv([K.open_run(os.path.join(WORK, f"warm{i}.run")) for i in range(2)],
                                K.AGG_SUM, f)
        K.count_byte(b, 10)


def scan_only(buf: np.ndarray) -> int:
    starts, ends, values = (np.empty(K.BATCH, np.int64) for _ in range(3))
    pos, total = 0, 0
    while pos < len(buf):
        n, pos = SCAN(buf, pos, starts, ends, values)
        total += n
    return total


def timed(fn, *args, **kw):
    t = time.perf_counter()
    r = fn(*args, **kw)
    return time.perf_counter() - t, r


def sort_write(table) -> int:
    runs = table.partitions(2, SEED)
    return sum(K.write_run(os.path.join(WORK, f"single-p{p}.run"), run, K.AGG_SUM)
               for p, run in enumerate(runs))


def merge() -> tuple[int, int]:
    runs = [K.open_run(os.path.join(WORK, f"single-p{p}.run")) for p in range(2)]
    with open(os.path.join(WORK, "single.tsv"), "wb") as f:
        return K.merge_runs_to_tsv(runs, K.AGG_SUM, f)


# --- the pipeline (runs in a fresh process: `--pipeline FILE`) -------------------------------

def _map_half(path: str, a: int, b: int, m: int) -> list[str]:
    buf = np.memmap(path, dtype=np.uint8, mode="r")[a:b]
    table = K.KeyTable(buf, K.AGG_SUM)
    K.aggregate_scan(SCAN, buf, table)
    out = []
    for p, run in enumerate(table.partitions(2, SEED)):
        out.append(os.path.join(WORK, f"pipe-m{m}-p{p}.run"))
        K.write_run(out[-1], run, K.AGG_SUM)
    return out


def _reduce(paths: list[str], out: str) -> tuple[int, int]:
    with open(out, "wb") as f:
        return K.merge_runs_to_tsv([K.open_run(p) for p in paths], K.AGG_SUM, f)


def pipeline(path: str) -> None:
    warm_up()  # kernels load from the numba cache (~0.2 s), before forking
    t0 = time.perf_counter()
    n = os.path.getsize(path)
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    cut = K.find_space(buf, n // 2, n)
    del buf
    with ProcessPoolExecutor(2, mp_context=get_context("fork")) as ex:
        maps = list(ex.map(_map_half, [path, path], [0, cut], [cut, n], [0, 1]))
        t1 = time.perf_counter()
        outs = [os.path.join(WORK, f"pipe-out-{p}.tsv") for p in range(2)]
        red = list(ex.map(_reduce, [[m[p] for m in maps] for p in range(2)], outs))
    t2 = time.perf_counter()
    print(f"PIPE map {t1 - t0:.3f} reduce {t2 - t1:.3f} keys {sum(k for k, _ in red)} "
          f"tsv_bytes {sum(b for _, b in red)}")


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default=os.path.join(WORK, "corpus.txt"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pipeline", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    if args.pipeline:
        pipeline(args.pipeline)
        return
    if not os.path.exists(args.file):
        print(f"building {args.file} ...", flush=True)
        build_corpus(args.file)
    warm_up()
    size = os.path.getsize(args.file)
    mb = size / 1e6
    res: dict[str, list[float]] = {}
    info: dict[str, object] = {}
    env = dict(os.environ, LC_ALL="C")
    for r in range(args.rounds):
        t, out = timed(subprocess.run, ["wc", "-w", args.file], env=env, capture_output=True)
        res.setdefault("wc -w (process)", []).append(t)
        info["wc -w words"] = int(out.stdout.split()[0])

        t, out = timed(subprocess.run, [sys.executable, __file__, "--pipeline", args.file],
                       capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr)
        res.setdefault("pipeline, 2 processes (process)", []).append(t)
        info["pipeline"] = out.stdout.strip()

        buf = np.memmap(args.file, dtype=np.uint8, mode="r")
        t, n = timed(scan_only, buf)
        res.setdefault("1 thread: scan only", []).append(t)
        table = K.KeyTable(buf, K.AGG_SUM)
        t, n = timed(K.aggregate_scan, SCAN, buf, table)
        res.setdefault("1 thread: scan + KeyTable", []).append(t)
        info["tokens"], info["distinct keys"] = n, len(table)

        t, info["run bytes"] = timed(sort_write, table)
        res.setdefault("1 thread: partitions(2) + write_run", []).append(t)
        del table
        t, (keys, tsv) = timed(merge)
        res.setdefault("1 thread: merge_runs_to_tsv", []).append(t)
        info["tsv bytes"] = tsv
        print(f"round {r + 1}: " + ", ".join(f"{k.split(': ')[-1]} {v[-1]:.2f}s"
                                                for k, v in res.items()), flush=True)

    print(f"\nfile {args.file}: {mb:.0f} MB, " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"median (and min) of {args.rounds} rounds; the machine may be shared, so compare "
          "numbers of the same round:")
    per_key = {"1 thread: partitions(2) + write_run", "1 thread: merge_runs_to_tsv"}
    for k, v in res.items():
        med = statistics.median(v)
        extra = (f"{info['distinct keys'] / med / 1e6:6.2f} M keys/s" if k in per_key
                 else f"{mb / med:6.0f} MB/s")
        print(f"  {k:40s} {med:6.2f} s  {extra}   (min {min(v):.2f}; all: "
              f"{', '.join(f'{x:.2f}' for x in v)})")
    wc = statistics.median(res["wc -w (process)"])
    pipe = statistics.median(res["pipeline, 2 processes (process)"])
    ratios = [p / w for p, w in zip(res["pipeline, 2 processes (process)"], res["wc -w (process)"],
                                    strict=True)]
    print(f"  pipeline / wc -w = {pipe / wc:.2f} (per round: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
