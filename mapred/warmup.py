"""The warm-up sample: a worker runs its job over a little input before any shard.

It loads (or compiles) every kernel a task needs with the types a task uses, and it catches the
job's mistakes that do not depend on the data — a ``scan`` numba cannot compile, a float stored in
the int64 ``values``, spans outside the buffer, a mapper, combiner or reducer that yields
something other than ``(key, value)`` pairs or values that cannot pass between tasks — before any
shard runs: ``sample_run`` raises ``JobLoadError`` (exit 2), one line ``JOB:LINE: ...``. Any other
error of user code is left to the task that meets it, retried and reported with its shard as
before: the sample is not the data.

The sample is the head of the corpus's first shard (``corpus_head``, read by the coordinator and
sent in the init request, so SSH hosts need no shard for it); numba jobs also get synthetic lines,
enough for the key table to grow. What user code prints during the warm-up is discarded (its
tasks print it again); in the plain tier the mapper sees at most ``HEAD_RECORDS`` records or
``PLAIN_SECONDS`` of them.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import itertools
import time
import zlib
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from mapred.errors import JobLoadError
from mapred.job import Job, def_line
from mapred.shards import Shard

HEAD_BYTES = 8192
HEAD_RECORDS = 64
PLAIN_SECONDS = 0.25
SAMPLE_NAME = "the warm-up sample"


def corpus_head(shards: Sequence[Shard]) -> dict[str, Any] | None:
    """The first whole records of the first shard for the init request: the file's ``rel``,
    the ``offset`` of the first record and ``data`` (base64); None when there are none."""
    for piece in shards[0].pieces if shards else ():
        if piece.size == 0:
            continue
        try:
            if piece.file.gzip:
                with gzip.open(piece.file.path, "rb") as f:
                    data = f.read(HEAD_BYTES)
            else:
                with open(piece.file.path, "rb") as f:
                    f.seek(piece.start)
                    data = f.read(min(HEAD_BYTES, piece.size))
        except (OSError, EOFError, zlib.error):
            return None  # the task that reads it says what is wrong
        records = data.split(b"\n")
        if len(data) == HEAD_BYTES or records[-1] == b"":
            records.pop()  # a cut record, or the empty string after the last newline
        if not records:
            return None
        data = b"".join(r + b"\n" for r in records[:HEAD_RECORDS])
        return {"rel": piece.file.rel, "offset": piece.start,
                "data": base64.b64encode(data).decode()}
    return None


def sample_run(tmp: Path, job: Job, head: dict[str, Any] | None) -> None:
    """Map and reduce a sample with ``job`` in the private directory ``tmp``; raise JobLoadError
    if the job broke its contract on it."""
    from mapred.worker.mapper import ContractError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if job.tier == "numba":
                _unless_data_error(_numba_sample, tmp, job, head)
                check_values(job)
            else:
                _unless_data_error(_plain_sample, tmp, job, head)
    except ContractError as e:
        raise JobLoadError(f"{job.path}:{e.line}: {e}") from None


def _unless_data_error(fn: Any, *args: Any) -> None:
    from mapred.worker.mapper import ContractError

    try:
        fn(*args)
    except ContractError:
        raise
    except Exception:  # noqa: BLE001,S110 - this input made user code fail: its task will say so
        pass


def _head_records(head: dict[str, Any] | None) -> list[bytes]:
    return base64.b64decode(head["data"]).split(b"\n")[:-1] if head else []


def _numba_sample(tmp: Path, job: Job, head: dict[str, Any] | None) -> None:
    from mapred.worker.mapper import MapSpec, PieceSpec, run_map
    from mapred.worker.reducer import run_reduce

    sample = tmp / "sample.txt"  # enough distinct words for the key table to grow
    synthetic = b"\n".join(b"w%d x\ty\r" % i for i in range(4000))
    sample.write_bytes(b"".join(r + b"\n" for r in _head_records(head)) + synthetic)
    piece = PieceSpec(str(sample), SAMPLE_NAME, 0, sample.stat().st_size, False)
    result = run_map(job, MapSpec("warm", "warm", (piece,)), tmp / "map", 2, 0, lambda n: None)
    run_reduce(job, result.outputs.get(0, []), tmp / "part", tmp / "reduce")


def _plain_sample(tmp: Path, job: Job, head: dict[str, Any] | None) -> None:
    """The first records through mapper, combiner, a run file and reducer, as a task does."""
    from mapred.worker.mapper import ContractError, PieceSpec, _call_mapper, _combine
    from mapred.worker.partition import write_plain_run
    from mapred.worker.reducer import _call_reducer

    if head is None:
        return
    piece = PieceSpec(head["rel"], head["rel"], 0, 0, False, int(head["offset"]))
    groups: dict[bytes, list[Any]] = {}
    at, deadline = piece.first, time.monotonic() + PLAIN_SECONDS
    for record in _head_records(head):
        for k, v in _call_mapper(job, record, piece, at):
            groups.setdefault(k, []).append(v)
        at += len(record) + 1
        if time.monotonic() > deadline:
            break
    combined = sorted((kv for k, vs in groups.items() for kv in _combine(job, k, vs)),
                      key=itemgetter(0))
    try:
        write_plain_run(tmp / "sample.run", combined)
    except TypeError as e:  # a value that is not plain data
        fn = "combiner" if job.combiner is not None else "mapper"
        raise ContractError(f"{fn}(): {e}", def_line(getattr(job, fn))) from None
    for key, group in itertools.groupby(combined, key=itemgetter(0)):
        _call_reducer(job, key, (v for _, v in group))


def check_values(job: Job) -> None:
    """Refuse a ``scan`` that stores a float (or complex) number into ``starts``, ``ends`` or
    ``values``: numba would silently truncate it to int64 (0.5 -> 0).

    Reads the types numba infers for ``scan``'s own statements, with the signatures the sample
    compiled (a cached kernel has no types on record, so inference runs again: ~30 ms). What
    scan's helpers store is not followed; a shape this check cannot type passes unchecked."""
    from mapred.worker.mapper import ContractError

    py_func = getattr(job.scan, "py_func", None)
    if py_func is None:
        return  # not compiled: loading warned about it
    try:
        from numba.core import compiler, ir, typed_passes, types
        from numba.core.registry import cpu_target

        targets = set(list(py_func.__code__.co_varnames[:py_func.__code__.co_argcount])[2:5])
        found = []
        for sig in getattr(job.scan, "signatures", []):
            fir = compiler.run_frontend(py_func)
            typing = typed_passes.type_inference_stage(
                cpu_target.typing_context, cpu_target.target_context, fir, sig, None)
            for inst, call in typing.calltypes.items():
                if isinstance(inst, (ir.SetItem, ir.StaticSetItem)) and \
                        inst.target.name in targets:
                    value = call.args[2]
                    if isinstance(getattr(value, "dtype", value), (types.Float, types.Complex)):
                        found.append((inst.loc.line, inst.target.name, value))
    except Exception:  # noqa: BLE001 - numba compiled it; this check just cannot follow it
        return
    if found:
        line, name, value = min(found)
        raise ContractError(f"scan() stores a {value} into {name}, an int64 array: numba would "
                            "truncate it silently (0.5 becomes 0). Values are integers: scale "
                            "and round, e.g. round(x * 1000)", line)
