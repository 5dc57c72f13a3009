"""Reduce tasks, run on a worker: merge one partition's sorted runs, reduce, write a part file.

Map outputs are runs sorted by key, so the reducer merges them in a streaming k-way merge: memory
stays bounded by the number of runs, not the number of keys, and a key set larger than memory
completes (the map side spilled sorted runs to disk). With more runs than ``MERGE_FANIN`` the
plain tier merges in passes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from mapred.job import Job
from mapred.limits import MERGE_FANIN
from mapred.worker.mapper import ContractError, UserCodeError, _first_line, pairs
from mapred.worker.partition import format_line, read_plain_run, write_plain_run

_BUFFER = 1 << 20


def run_reduce(job: Job, inputs: list[str], out: Path, scratch: Path) -> dict[str, int]:
    """Reduce the runs ``inputs`` of one partition into the part file ``out``.

    ``scratch`` is a private directory for intermediate merge passes, removed by the caller.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if job.tier == "numba":
        keys, written = _reduce_numba(job, inputs, out)
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        keys, written = _reduce_plain(job, inputs, out, scratch)
    return {"keys_out": keys, "bytes_out": written, "runs": len(inputs)}


def _reduce_numba(job: Job, inputs: list[str], out: Path) -> tuple[int, int]:
    from mapred import kernels

    agg = kernels.AGG_BY_NAME[job.aggregate]
    runs = [kernels.open_run(p) for p in inputs]
    with open(out, "wb", buffering=_BUFFER) as f:
        keys, written = kernels.merge_runs_to_tsv(runs, agg, f)
    return int(keys), int(written)


def _merged(inputs: list[str], scratch: Path) -> Iterator[tuple[bytes, Any]]:
    """All pairs of ``inputs`` in key order, merging in passes of at most MERGE_FANIN runs."""
    level = 0
    while len(inputs) > MERGE_FANIN:
        merged = []
        for i in range(0, len(inputs), MERGE_FANIN):
            group = inputs[i : i + MERGE_FANIN]
            path = scratch / f".merge-{level}-{i // MERGE_FANIN}.run"
            write_plain_run(path, heapq.merge(*map(_reader, group), key=itemgetter(0)))
            merged.append(str(path))
        inputs, level = merged, level + 1
    return heapq.merge(*map(_reader, inputs), key=itemgetter(0))


def _reader(path: str) -> Iterator[tuple[bytes, Any]]:
    return read_plain_run(Path(path))


def _reduce_plain(job: Job, inputs: list[str], out: Path, scratch: Path) -> tuple[int, int]:
    keys = written = 0
    with open(out, "wb", buffering=_BUFFER) as f:
        for key, group in itertools.groupby(_merged(inputs, scratch), key=itemgetter(0)):
            for k, v in _call_reducer(job, key, (v for _, v in group)):
                line = format_line(k, v)
                f.write(line)
                keys += 1
                written += len(line)
    return keys, written


def _call_reducer(job: Job, key: bytes, values: Iterator[Any]) -> list[tuple[bytes, Any]]:
    assert job.reducer is not None
    try:
        return pairs(job.reducer(key, values), "reducer", job)
    except ContractError as e:
        raise e.where(f"key {key[:60]!r}") from None
    except Exception as e:  # noqa: BLE001 - user code
        from mapred.job import user_traceback

        raise UserCodeError(
            f"reducer() raised {type(e).__name__}: {_first_line(e)} (key {key[:60]!r})",
            user_traceback(e, job.path),
        ) from None
