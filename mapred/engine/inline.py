"""``mapred run --inline``: the whole job in this one process, in order, for debugging.

Every shard is mapped, then every partition reduced, by the same ``run_map``/``run_reduce`` the
workers call, with the same shards, partitioning and reducer count as a local run on this
machine: the output is byte for byte that of ``mapred run`` without ``--inline``. But there is
no worker, so ``print()`` reaches this terminal and ``breakpoint()``/``pdb`` stop in the user's
code (mrjob's ``-r inline``). No retries (the first error ends the run, with the user's
traceback), no journal, no ``--resume``, no hosts; the output commit is the same atomic one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from mapred import job as jobmod
from mapred import paths
from mapred.engine import output
from mapred.engine.runner import DEFAULT_SHARD_LIMIT, RunConfig, Summary, default_reducers, new_run_id
from mapred.errors import TaskError
from mapred.shards import Piece, Shard, auto_shard_size, list_inputs, plan
from mapred.worker.mapper import MapSpec, PieceSpec, UserCodeError, run_map
from mapred.worker.reducer import run_reduce

log = logging.getLogger("mapred")


def run_inline(cfg: RunConfig) -> Summary:
    started = time.monotonic()
    run_id = new_run_id()
    with output.OutputLock(cfg.state, cfg.output) as lock:
        output.check_output(cfg.output, cfg.corpus, cfg.overwrite,
                            output.guarded_paths(cfg.state, cfg.job, cfg.hosts_file))
        jobmod.check_syntax(cfg.job)
        job = jobmod.load(cfg.job, cfg.params)
        for warning in job.warnings:
            log.warning("%s", warning)
        files = list_inputs(cfg.corpus, cfg.follow_symlinks, cfg.output)
        slots = os.cpu_count() or 1  # as a local run here: the same cuts, the same parts
        shard_size = cfg.shard_size or auto_shard_size(sum(f.size for f in files), slots,
                                                       DEFAULT_SHARD_LIMIT)
        shards = plan(files, shard_size)
        reducers = cfg.reducers or default_reducers(slots, len(shards))
        staging = lock.stage(run_id)
        try:
            counters = _map_and_reduce(cfg, job, shards, reducers, staging)
            output.commit(staging, cfg.output, run_id, cfg.overwrite)
        finally:
            output.abandon(staging)  # nothing left once committed
    counters["input_bytes"] = sum(s.size for s in shards)
    counters["input_gzip"] = int(any(p.file.gzip for s in shards for p in s.pieces))
    return Summary(run_id, cfg.output, time.monotonic() - started, counters, {}, len(shards),
                   reducers)


def _map_and_reduce(cfg: RunConfig, job: jobmod.Job, shards: list[Shard], reducers: int,
                    staging: Path) -> dict[str, int]:
    counters: dict[str, int] = {}

    def add(kind: str, values: dict[str, int]) -> None:
        for key, value in values.items():
            counters[f"{kind}_{key}"] = counters.get(f"{kind}_{key}", 0) + int(value)

    scratch_root = cfg.state / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inline-", dir=scratch_root) as tmp:
        inputs: dict[int, list[str]] = {p: [] for p in range(reducers)}
        for shard in shards:
            spec = MapSpec(shard.task, shard.task, tuple(_piece(p) for p in shard.pieces))
            try:
                result = run_map(job, spec, Path(tmp) / "map" / shard.task, reducers, cfg.seed,
                                 lambda n: None)
            except UserCodeError as e:
                raise TaskError(f"map task {shard.task} ({shard.describe()}) failed: {e}",
                                task=shard.task, host="inline", shard=shard.describe(),
                                detail=e.detail) from None
            add("map", result.counters)
            for partition, runs in result.outputs.items():
                inputs[partition].extend(str(r) for r in runs)
        for partition in range(reducers):
            out = staging / paths.part_name(partition)
            try:
                add("reduce", run_reduce(job, inputs[partition], out,
                                         Path(tmp) / "reduce" / str(partition)))
            except UserCodeError as e:
                raise TaskError(f"reduce task for partition {partition} failed: {e}",
                                task=f"r{partition:05d}", host="inline",
                                shard=f"partition {partition}", detail=e.detail) from None
            os.chmod(out, 0o666 & ~_umask())
    return counters


def _piece(p: Piece) -> PieceSpec:
    return PieceSpec(str(p.file.path), p.file.rel, p.start, p.end, p.file.gzip,
                     size=p.file.size, mtime_ns=p.file.mtime_ns)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
