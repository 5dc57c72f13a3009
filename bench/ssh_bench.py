#!/usr/bin/env python3
"""SSH transport benchmarks on a 3-host test LAN (tests/lanlib.py), side by side in one run.

    sudo .venv/bin/python bench/ssh_bench.py [--mb 125] [--no-dask] [--json out.json]

1. a 1 KB word count end to end (``mapred run ... --hosts``, the CLI as a user runs it);
2. word count of a ~125 MB real-text corpus (the GCIDE dictionary, Python's standard library
   sources, /usr/share/doc texts): mapred with shipping included (the hosts' shard caches are
   emptied first) against Dask ``SSHCluster`` + ``dask.bag`` on the same hosts (Dask reads the
   corpus from a path shared with the hosts: the hosts see this machine's root file system
   read-only, so the corpus lives under /opt, which they can read);
3. shard transfer throughput of the SSH transport against one plain ``rsync -e ssh`` of the
   same bytes to the same host;
4. a rerun on the unchanged corpus: shard bytes re-sent and bytes on the laptop's link.

Needs root (network namespaces). Installs this tree's mapred (a wheel, non-editable) and, for
Dask, ``dask[distributed]`` and ``asyncssh`` into the LAN hosts' venv.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from lanlib import WORKDIR, Lan  # noqa: E402

SHARED = Path("/opt/mapred-bench")  # readable by the LAN hosts (their / is this one, read-only)
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
PY = sys.executable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


def install_mapred(lan: Lan, tmp: Path) -> None:
    from mapred.cli.hosts import build_wheel, pinned_requirements

    pip = [lan.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *pinned_requirements()], check=True, cwd="/")
    wheel = build_wheel(tmp / "wheel")
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True, cwd="/")


def install_dask(lan: Lan) -> str:
    """The laptop's dask/distributed/asyncssh versions, installed into the hosts' venv too."""
    import importlib.metadata as md

    names = ["dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "fsspec",
             "partd", "asyncssh"]
    pins = [f"{n}=={md.version(n)}" for n in names]
    subprocess.run([lan.python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *pins], check=True, cwd="/", timeout=900)
    return " ".join(pins)


def real_text_corpus(mb: int) -> Path:
    """~mb MiB of real text in 8 files (built once, kept under /opt for the next run)."""
    root = SHARED / f"corpus-{mb}m"
    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    target = mb << 20
    chunks: list[bytes] = []
    size = 0

    def add(data: bytes) -> bool:
        nonlocal size
        chunks.append(data)
        size += len(data)
        return size >= target

    done = add(gzip.decompress(GCIDE.read_bytes())) if GCIDE.exists() else False
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for src in sorted(stdlib.rglob("*.py")):
        if done or "site-packages" in src.parts:
            continue
        done = add(src.read_bytes())
    for src in sorted(Path("/usr/share/doc").rglob("*")):
        if done:
            break
        if src.is_file() and not src.is_symlink() and src.suffix not in (".gz", ".png", ".jpg"):
            with contextlib.suppress(OSError):
                done = add(src.read_bytes())
    data = b"".join(chunks)[:target]
    per = len(data) // 8
    start = 0
    for i in range(8):
        end = len(data) if i == 7 else data.rfind(b"\n", start, start + per) + 1 or start + per
        (root / f"text-{i}.txt").write_bytes(data[start:end])
        start = end
    (root / ".done").write_text("")
    return root


def mapred_run(*args: str | Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "mapred.cli.main", "run", *map(str, args)], cwd="/",
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mapred {args} failed: {proc.stderr}")
    return took, proc.stderr


def clear_host_caches(lan: Lan) -> None:
    for h in lan.hosts:
        h.run(f"rm -rf {WORKDIR}/cache {WORKDIR}/plain", check=True)


def bridge_tx(lan: Lan) -> int:
    out = subprocess.run(["ip", "-s", "-j", "link", "show", lan.bridge], capture_output=True,
                         text=True, check=True).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


# --------------------------------------------------------------------------- benchmarks


def bench_tiny(lan: Lan, hosts: Path, tmp: Path, runs: int = 5) -> dict[str, Any]:
    corpus = tmp / "tiny"
    corpus.mkdir()
    (corpus / "one-kb.txt").write_bytes((b"the quick brown fox jumps over the lazy dog\n" * 24)[:1024])
    one = tmp / "hosts-1core.toml"
    one.write_text(hosts.read_text().replace("[defaults]\n", "[defaults]\ncores = 1\n"))
    out: dict[str, Any] = {}
    for label, hf in (("cores detected (2 per host, 6 workers on this 2-core machine)", hosts),
                      ("cores = 1 per host", one)):
        times = []
        for i in range(runs + 1):
            took, _ = mapred_run("wordcount", corpus, "-o", tmp / f"tiny-{len(out)}-{i}",
                                 "--hosts", hf, "-q", env={"XDG_STATE_HOME": str(tmp / "st")})
            times.append(took)
        out[label] = {"first": round(times[0], 2), "median": round(statistics.median(times[1:]), 2),
                      "min": round(min(times[1:]), 2)}
        log(f"1 KB job, {label}: {out[label]}")
    return out


def bench_wordcount_mapred(lan: Lan, hosts: Path, corpus: Path, tmp: Path) -> dict[str, Any]:
    clear_host_caches(lan)
    env = {"XDG_STATE_HOME": str(tmp / "st")}
    tx0 = bridge_tx(lan)
    first, err1 = mapred_run("wordcount", corpus, "-o", tmp / "wc1", "--hosts", hosts, "-v",
                             env=env)
    tx1 = bridge_tx(lan)
    again, err2 = mapred_run("wordcount", corpus, "-o", tmp / "wc2", "--hosts", hosts, "-v",
                             env=env)
    tx2 = bridge_tx(lan)
    size = sum(p.stat().st_size for p in corpus.glob("*.txt"))

    def shard_bytes(err: str) -> int:
        return sum(int(m) for m in re.findall(r"shards sent \d+ \((\d+) bytes\)", err))

    same = all((tmp / "wc1" / p.name).read_bytes() == p.read_bytes()
               for p in (tmp / "wc2").glob("part-*"))
    res = {"corpus_bytes": size, "seconds_first": round(first, 2),
           "seconds_rerun": round(again, 2),
           "shard_bytes_first": shard_bytes(err1), "shard_bytes_rerun": shard_bytes(err2),
           "laptop_tx_first": tx1 - tx0, "laptop_tx_rerun": tx2 - tx1,
           "rerun_resent_fraction": round((tx2 - tx1) / size, 5), "rerun_same_output": same}
    log(f"mapred word count: {res}")
    return res


def bench_dask(lan: Lan, corpus: Path) -> dict[str, Any]:
    import dask.bag as db
    from dask.distributed import Client, SSHCluster

    names = [h.address for h in lan.hosts]
    t0 = time.monotonic()
    cluster = SSHCluster(
        [names[0], *names],
        connect_options={"known_hosts": str(lan.known_hosts), "username": "root",
                         "client_keys": [str(lan.identity)]},
        # the hosts have no default route: name the interface, or Dask binds 127.0.0.1
        worker_options={"nthreads": 1, "n_workers": 2, "interface": "eth0"},
        scheduler_options={"port": 0, "dashboard_address": ":0", "interface": "eth0"},
        remote_python=lan.python,
    )
    client = Client(cluster)
    client.wait_for_workers(6, timeout=120)
    started = time.monotonic() - t0
    try:
        files = sorted(str(p) for p in corpus.glob("*.txt"))
        t1 = time.monotonic()
        bag = db.read_text(files, blocksize="16MiB", encoding="latin-1")
        freq = bag.str.split().flatten().frequencies().compute()
        compute = time.monotonic() - t1
        words = sum(n for _, n in freq)
    finally:
        client.close()
        cluster.close()
    res = {"cluster_start_seconds": round(started, 2), "compute_seconds": round(compute, 2),
           "distinct_words": len(freq), "words": words}
    log(f"dask: {res}")
    return res


def bench_throughput(lan: Lan, hosts: Path, corpus: Path, tmp: Path) -> dict[str, Any]:
    from mapred.cluster.hosts import load_hosts
    from mapred.cluster.ssh.remote import SSHTransport
    from mapred.shards import list_inputs, plan

    files = sorted(corpus.glob("*.txt"))
    size = sum(f.stat().st_size for f in files)
    h1 = lan.hosts[0]
    clear_host_caches(lan)
    h1.run(f"mkdir -p {WORKDIR}/plain", check=True)
    t0 = time.monotonic()
    subprocess.run(["rsync", "-s", "-e", lan.rsync_rsh, "--", *map(str, files),
                    f"h1:{WORKDIR}/plain/"], check=True)
    plain = time.monotonic() - t0
    h1.run(f"rm -rf {WORKDIR}/plain", check=True)
    cluster = load_hosts(hosts)
    t = SSHTransport(cluster.hosts[0], run_state_dir=tmp / "st", prespawn=False)
    try:
        t.wait_ready()
        t.start("bench")
        shards = plan(list_inputs(corpus), 64 << 20)
        t0 = time.monotonic()
        for fut in [t.prepare(s) for s in shards]:
            fut.result()
        ours = time.monotonic() - t0
    finally:
        t.close()
    res = {"bytes": size, "shards": len(shards), "plain_rsync_MBps": round(size / plain / 1e6, 1),
           "transport_MBps": round(size / ours / 1e6, 1), "ratio": round(plain / ours, 3)}
    log(f"transfer: {res}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=125)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    ok, why = Lan.available()
    if not ok:
        log(f"cannot run the test LAN here: {why}")
        return 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mapred-ssh-bench-") as d, Lan.up(3, Path(d) / "lan") as lan:
        tmp = Path(d)
        log("installing mapred into the hosts' venv ...")
        install_mapred(lan, tmp)
        hosts = lan.write_hosts_toml(tmp / "hosts.toml")
        corpus = real_text_corpus(a.mb)
        results["tiny_job_seconds"] = bench_tiny(lan, hosts, tmp)
        results["wordcount"] = bench_wordcount_mapred(lan, hosts, corpus, tmp)
        results["transfer"] = bench_throughput(lan, hosts, corpus, tmp)
        if not a.no_dask:
            try:
                results["dask_versions"] = install_dask(lan)
                results["dask"] = bench_dask(lan, corpus)
                results["speedup_vs_dask_compute_only"] = round(
                    results["dask"]["compute_seconds"] / results["wordcount"]["seconds_first"], 1)
            except Exception as e:  # noqa: BLE001 - say exactly why Dask could not run
                results["dask_error"] = f"{type(e).__name__}: {e}"
                log(f"dask failed: {results['dask_error']}")
    print(json.dumps(results, indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
