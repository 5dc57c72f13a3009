"""Word count speed and memory, mapred vs reference tools, measured side by side.

    python bench/wordcount.py [--mb 500] [--rounds 3] [--tools mapred,wc,sort,counter,dask]

Builds (once, cached under /tmp/mapred-bench) a real-text corpus: the Python standard library's
sources, the GCIDE dictionary and fortunes when installed, repeated to the size asked, every other
copy with its letters rotated so the distinct-token count grows like a real corpus's. Then runs
each tool once per round (the order rotates; each starts on an idle machine), and prints medians
and ratios to `LC_ALL=C wc -w`, mapred's peak memory (whole process tree) at two corpus sizes,
and a 1 KB end-to-end time.
Dask is optional: `pip install 'dask[bag]'` (the `bench` extra) to include it.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/mapred-bench")
MAPRED = [sys.executable, "-m", "mapred.cli.main"]


def base_text() -> bytes:
    parts = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.rglob("*.py")):
        rel = p.relative_to(stdlib).parts
        if rel[0] not in ("site-packages", "dist-packages") and "__pycache__" not in rel:
            parts.append(p.read_bytes())
    gcide = Path("/usr/share/dictd/gcide.dict.dz")
    if gcide.exists():
        parts.append(gzip.decompress(gcide.read_bytes()))
    fortunes = Path("/usr/share/games/fortunes")
    for f in sorted(fortunes.glob("*")) if fortunes.is_dir() else []:
        if f.suffix not in (".dat", ".u8") and f.is_file():
            parts.append(f.read_bytes())
    return b"\n".join(parts)


def corpus(mb: int) -> Path:
    path = CACHE / f"corpus-{mb}M.txt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    base = base_text()
    lower = bytes(range(ord("a"), ord("z") + 1))
    want = mb << 20
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        written, i = 0, 0
        while written < want:
            shift = i % 4
            rot = lower[shift:] + lower[:shift]
            chunk = base.translate(bytes.maketrans(lower, rot)) if shift else base
            chunk = chunk[: want - written]
            f.write(chunk)
            written += len(chunk)
            i += 1
    tmp.rename(path)
    return path


class PeakRSS:
    """Samples the summed anonymous RSS (RssAnon: heap, tables, buffers; not the page cache of
    memory-mapped input, which the kernel can drop) of a process tree every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.stop = pid, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    ppid = int(open(f"/proc/{e}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
                kids.setdefault(ppid, []).append(int(e))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += kids.get(p, [])
        return out

    def _run(self) -> None:
        while not self.stop:
            total = 0
            for p in self._tree():
                try:
                    for line in open(f"/proc/{p}/status"):
                        if line.startswith("RssAnon:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def done(self) -> int:
        self.stop = True
        self.thread.join()
        return self.peak


def timed(cmd: list[str] | str, shell: bool = False, measure_rss: bool = False) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL, cwd=ROOT)
    sampler = PeakRSS(proc.pid) if measure_rss else None
    rc = proc.wait()
    wall = time.perf_counter() - t0
    peak = sampler.done() if sampler else 0
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {cmd}")
    return wall, peak


def settle(limit: float = 0.15, most: float = 20.0) -> None:
    """Wait (at most ``most`` seconds) until the CPUs are idle: under ``limit`` busy over 0.5 s."""
    def busy() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)

    end = time.monotonic() + most
    while time.monotonic() < end:
        b0, t0 = busy()
        time.sleep(0.5)
        b1, t1 = busy()
        if (b1 - b0) / max(1, t1 - t0) < limit:
            return


def mapred_cmd(path: Path, out: str = "out") -> list[str]:
    return [*MAPRED, "run", "wordcount", str(path), "-o", str(CACHE / out), "--overwrite",
            "-q", "--state-dir", str(CACHE / "state")]


COUNTER = ("import sys; from collections import Counter; "
           "Counter(open(sys.argv[1], 'rb').read().split())")
DASK = ("import sys, dask.bag as db\n"
        "if __name__ == '__main__':\n"
        "    b = db.read_text(sys.argv[1], blocksize='64MiB', errors='surrogateescape')\n"
        "    b.map(str.split).flatten().frequencies().compute(scheduler='processes', "
        "num_workers=2)\n")


def tools(path: Path) -> dict[str, tuple[list[str] | str, bool]]:
    q = str(path)
    return {
        "mapred": (mapred_cmd(path), False),
        "wc": (f"LC_ALL=C wc -w '{q}'", True),
        "sort": (f"LC_ALL=C tr -s ' \\t\\r\\v\\f' '\\n' < '{q}' | LC_ALL=C sort -S4G "
                 "--parallel=2 | LC_ALL=C uniq -c", True),
        "counter": ([sys.executable, "-c", COUNTER, q], False),
        "dask": ([sys.executable, "-c", DASK, q], False),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default="mapred,wc,sort,counter,dask")
    args = ap.parse_args()
    names = args.tools.split(",")
    if "dask" in names:
        try:
            import dask.bag  # noqa: F401
        except ImportError:
            print("dask not installed (pip install 'dask[bag]'): skipping it", file=sys.stderr)
            names.remove("dask")
    path = corpus(args.mb)
    small = CACHE / "1k.txt"
    small.write_bytes(path.read_bytes()[:1024] if path.stat().st_size < 1 << 20
                      else open(path, "rb").read(1024))
    print(f"corpus: {path} ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    timed(mapred_cmd(small))  # warm numba's on-disk cache
    cmds = tools(path)
    walls: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        # the order rotates each round, and each tool starts on a settled machine: the processes
        # of the tool before (Dask's pool, a Counter's gigabytes being freed) can outlive it
        for n in names[r % len(names):] + names[:r % len(names)]:
            cmd, shell = cmds[n]
            settle()
            wall, _ = timed(cmd, shell)  # no memory sampling here: it takes CPU from the tool
            walls[n].append(wall)
            print(f"  round {r + 1} {n:8s} {wall:7.2f} s", flush=True)
    med = {n: statistics.median(v) for n, v in walls.items()}
    print(f"\nmedian of {args.rounds}, {args.mb} MB, ratio = tool / `LC_ALL=C wc -w`:")
    for n in names:
        ratio = med[n] / med["wc"] if "wc" in med else float("nan")
        vs = med[n] / med["mapred"] if "mapred" in med else float("nan")
        print(f"  {n:8s} {med[n]:7.2f} s   x wc: {ratio:5.2f}   x mapred: {vs:6.2f}")
    if "mapred" in names:
        # in runs of their own (sampling /proc every 20 ms costs CPU): every copy from the fifth
        # on repeats a rotation already present, so the double corpus has the same distinct keys
        # and twice the bytes; peak memory should stay flat
        _, peak = timed(mapred_cmd(path), measure_rss=True)
        _, double_peak = timed(mapred_cmd(corpus(2 * args.mb)), measure_rss=True)
        print(f"\nmapred peak anonymous RSS (process tree): {args.mb} MB corpus "
              f"{peak / 2**20:.0f} MiB, {2 * args.mb} MB corpus (same distinct keys) "
              f"{double_peak / 2**20:.0f} MiB")
    tiny = sorted(timed(mapred_cmd(small, "out-1k"))[0] for _ in range(5))
    print(f"1 KB end to end (warm cache): median {statistics.median(tiny):.2f} s")


if __name__ == "__main__":
    main()
