"""Map tasks, run on a worker: read a shard, run the job's mapper, combine, partition, write runs.

Each map attempt writes its outputs into its own directory (see ``paths.map_attempt_dir``): for
each partition one or more run files sorted by key (more than one when the task spilled or read a
large gzip file in pieces). The coordinator uses only the outputs of the attempt it commits.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.job import USER_COUNTER, Job, MapContext, def_line
from mapred.limits import DEFAULT_BUDGET
from mapred.wire import Piece
from mapred.worker.partition import partition_of, to_key, write_plain_run

BATCH = 16384  # pairs per scan() call: the span arrays stay in L2
GZIP_PIECE = 64 << 20  # decompressed bytes per numba buffer for gzip input
TABLE_BYTES_PER_KEY = 200  # numba key table: entry, index and the sort temporaries (kernels)
PLAIN_BYTES_PER_KEY = 120  # plain tier: dict entry, bytes object and list overhead
PLAIN_BYTES_PER_VALUE = 40  # a list slot and a small value; a larger one adds its own size
_SMALL_VALUES = frozenset({int, float, bool, type(None)})


class UserCodeError(Exception):
    """User code raised; carries the formatted user traceback."""

    def __init__(self, message: str, detail: str | None) -> None:
        super().__init__(message)
        self.detail = detail


class ContractError(UserCodeError):
    """User code broke the job contract whatever its input: a scan that does not compile or
    writes outside its buffer, a mapper that yields something other than (key, value) pairs...
    ``line`` is the line of the job module at fault. Found by the warm-up sample, it is a usage
    error (exit 2); in a task, a task failure like any other."""

    def __init__(self, message: str, line: int, detail: str | None = None) -> None:
        super().__init__(message, detail)
        self.line = line

    def where(self, text: str) -> ContractError:
        return ContractError(f"{self} ({text})", self.line, self.detail)


def pairs(out: Any, fn: str, job: Job) -> list[tuple[bytes, Any]]:
    """The (key, value) pairs that the job's function ``fn`` returned or yielded as ``out``,
    keys as bytes. Raises ContractError for anything else; what the user's generator raises
    passes through."""
    if out is None:
        return []
    if type(out) is tuple and len(out) == 2 and isinstance(out[0], (bytes, str)):
        raise ContractError(f"{fn}() returned one pair {out!r:.60}: yield pairs, or return a "
                            "list of them", def_line(getattr(job, fn)))
    try:
        items = iter(out)
    except TypeError:
        raise ContractError(f"{fn}() returned {type(out).__name__} {out!r:.60}, not an iterable "
                            "of (key, value) pairs", def_line(getattr(job, fn))) from None
    result = []
    for item in items:
        if type(item) is not tuple or len(item) != 2:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ContractError(f"{fn}() yielded {item!r:.60}, not a (key, value) pair",
                                    _yield_line(out, fn, job))
        k, v = item
        if type(k) is not bytes:
            try:
                k = to_key(k)
            except TypeError:
                raise ContractError(f"{fn}() yielded a key of type {type(k).__name__} "
                                    f"({k!r:.40}): keys must be bytes or str",
                                    _yield_line(out, fn, job)) from None
        result.append((k, v))
    return result


def _yield_line(out: Any, fn: str, job: Job) -> int:
    """The line of the ``yield`` that gave the item just taken from ``out`` (where a generator
    is suspended), else the line of the function's ``def``."""
    line, gen = 0, out
    while getattr(gen, "gi_frame", None) is not None:  # through `yield from` to the innermost
        if gen.gi_frame.f_code.co_filename == str(job.path):
            line = gen.gi_frame.f_lineno
        gen = getattr(gen, "gi_yieldfrom", None)
    return line or def_line(getattr(job, fn))


PieceSpec = Piece  # a piece as the worker reads it: the wire's own shape


class InputChanged(OSError):
    """An input file read in place is not the one the run planned (truncated, grown, rewritten)."""


def _check_unchanged(f: Any, piece: PieceSpec) -> None:
    if piece.size is None:
        return
    st = os.fstat(f.fileno())
    if st.st_size != piece.size or st.st_mtime_ns != piece.mtime_ns:
        now = "rewritten" if st.st_size == piece.size else f"now {st.st_size} bytes"
        raise InputChanged(f"input file changed during the run: {piece.rel} (planned "
                           f"{piece.size} bytes, {now}); run again on a stable input")


@contextmanager
def _opened(piece: PieceSpec) -> Iterator[Any]:
    """The piece's file, checked against the plan when opened and again when fully read."""
    with open(piece.path, "rb") as f:
        _check_unchanged(f, piece)
        yield f
        _check_unchanged(f, piece)


@dataclass(frozen=True)
class MapSpec:
    task: str
    attempt: str
    pieces: tuple[PieceSpec, ...]


@dataclass
class MapResult:
    outputs: dict[int, list[str]] = field(default_factory=dict)  # partition -> run files
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class _Outputs:
    """Collects run files of one attempt, numbering them per partition."""

    directory: Path
    result: MapResult
    nparts: int = 1
    seed: int = 0
    budget: int = DEFAULT_BUDGET

    def path(self, partition: int) -> Path:
        runs = self.result.outputs.setdefault(partition, [])
        p = paths.map_run_file(self.directory, partition, len(runs))
        runs.append(str(p))
        return p

    def add(self, name: str, amount: int) -> None:
        self.result.counters[name] = self.result.counters.get(name, 0) + amount


Progress = Callable[[int], None]


def run_map(
    job: Job, spec: MapSpec, out_dir: Path, nparts: int, seed: int, progress: Progress,
    budget: int = DEFAULT_BUDGET,
) -> MapResult:
    """Run one map attempt; write its runs under ``out_dir``.

    Map-side state (the key table, or the plain tier's groups) is written out as sorted runs
    whenever it passes ``budget`` bytes, so memory stays bounded whatever the key count.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    outs = _Outputs(out_dir, MapResult(), nparts, seed, budget)
    for key in ("bytes_in", "records", "pairs", "keys", "bytes_out", "spills"):
        outs.add(key, 0)
    if job.tier == "numba":
        _map_numba(job, spec, outs, progress)
    else:
        _map_plain(job, spec, outs, progress)
    for runs in outs.result.outputs.values():
        for p in runs:
            outs.add("bytes_out", Path(p).stat().st_size)
    return outs.result


# --- numba tier -----------------------------------------------------------------------------


def _numba_buffers(spec: MapSpec, progress: Progress,
                   ) -> Iterator[tuple[Any, list[tuple[int, int, PieceSpec]]]]:
    """Buffers to scan, each with the (start, end, piece) segments it holds.

    One large piece is memory-mapped; several small files are read into one buffer (the key
    table refers to a single buffer); gzip input comes in decompressed, newline-aligned parts
    (its progress is the compressed bytes read, reported here).
    """
    import numpy as np

    if len(spec.pieces) == 1:
        piece = spec.pieces[0]
        if piece.gzip:
            for buf in _gzip_pieces(piece, progress):
                yield buf, [(0, len(buf), piece)]
        elif piece.end > piece.start:
            with _opened(piece) as f:
                buf = np.memmap(f, dtype=np.uint8, mode="r", offset=piece.start,
                                shape=(piece.end - piece.start,))
                yield buf, [(0, len(buf), piece)]
        return
    total = sum(p.end - p.start for p in spec.pieces)
    buf = np.empty(total, dtype=np.uint8)
    segments = []
    at = 0
    for piece in spec.pieces:
        size = piece.end - piece.start
        with _opened(piece) as f:
            f.seek(piece.start)
            got = f.readinto(memoryview(buf)[at : at + size])  # type: ignore[arg-type]
        if got != size:
            raise InputChanged(f"input file changed during the run: {piece.rel} (expected "
                               f"{size} bytes at {piece.first}, read {got})")
        segments.append((at, at + size, piece))
        at += size
    buf.flags.writeable = False  # typed like a mapped file's: the kernels compile once
    yield buf, segments


def _no_progress(nbytes: int) -> None:
    pass


def _gzip_pieces(piece: PieceSpec, progress: Progress) -> Iterator[Any]:
    """Decompressed pieces of a gzip file, each ending at a record boundary."""
    import numpy as np

    carry = b""
    read = 0
    with _opened(piece) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
        while True:
            block = f.read(GZIP_PIECE)
            at = raw.tell()
            progress(at - read)
            read = at
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            carry = data[cut:]
            yield np.frombuffer(data[:cut], dtype=np.uint8)
    if carry:
        yield np.frombuffer(carry, dtype=np.uint8)


def _map_numba(job: Job, spec: MapSpec, outs: _Outputs, progress: Progress) -> None:
    import numpy as np

    from mapred import kernels

    agg = kernels.AGG_BY_NAME[job.aggregate]
    arrays = (np.empty(BATCH, np.int64), np.empty(BATCH, np.int64), np.empty(BATCH, np.int64))
    for buf, segments in _numba_buffers(spec, progress):
        table = kernels.KeyTable(buf, agg)
        for a, b, piece in segments:
            view = buf[a:b] if len(segments) > 1 else buf
            table = _scan_segment(job, view, a, piece, table, arrays, outs,
                                  _no_progress if piece.gzip else progress)
        lines = int(kernels.count_byte(buf, 10))
        ends_open = sum(1 for a, b, _ in segments if b > a and buf[b - 1] != 10)
        outs.add("records", lines + ends_open)
        outs.add("bytes_in", len(buf))
        _flush_table(table, outs, agg)


def _scan_segment(job: Job, view: Any, base: int, piece: PieceSpec, table: Any,
                  arrays: tuple[Any, Any, Any], outs: _Outputs, progress: Progress) -> Any:
    """Run the job's scan over one file's bytes; spans are shifted by ``base`` into the
    table's buffer. Returns the table in use at the end (a full one is flushed and replaced)."""
    from mapred import kernels

    starts, ends, values = arrays
    n = len(view)
    pos = 0
    while pos < n:
        k, new = _call_scan(job, view, pos, starts, ends, values)
        if k:
            _check_spans(starts, ends, k, n, piece, job)
            if base:
                starts[:k] += base
                ends[:k] += base
            table.add_batch(starts, ends, values, k)
            outs.add("pairs", k)
            if len(table) * TABLE_BYTES_PER_KEY > outs.budget:
                _flush_table(table, outs, table.agg)
                table = kernels.KeyTable(table.buf, table.agg)
        if new <= pos and new != n:
            raise ContractError(
                f"scan() did not advance (pos {pos} -> {new}) in {piece.describe()}",
                def_line(job.scan),
                "scan must return a new_pos greater than pos until the buffer is consumed",
            )
        progress(min(new, n) - pos)
        pos = new
    return table


def _call_scan(job: Job, buf: Any, pos: int, starts: Any, ends: Any,
               values: Any) -> tuple[int, int]:
    assert job.scan is not None
    try:
        k, new = job.scan(buf, pos, starts, ends, values, *job.extra)
    except Exception as e:  # noqa: BLE001 - user kernel, incl. numba typing errors
        from numba.core.errors import NumbaError

        from mapred.job import user_traceback

        if isinstance(e, NumbaError):  # compiling failed: no input is to blame
            raise _compile_error(e, job) from None
        raise UserCodeError(f"scan() raised {type(e).__name__}: {_first_line(e)}",
                            user_traceback(e, job.path)) from None
    return int(k), int(new)


_NUMBA_WHERE = re.compile(r'File "([^"]+)", line (\d+)|\bat (\S+) \((\d+)\)')


def _compile_error(e: Exception, job: Job) -> ContractError:
    """numba's many-line message as one line, at the first line of the job module it names."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # numba may colour it
    line = _line_naming(job.scan, re.search(r"name '(\w+)' is not defined", text))
    for m in _NUMBA_WHERE.finditer(text):
        name, number = (m[1], m[2]) if m[1] else (m[3], m[4])
        if Path(name).name == job.path.name:
            line = int(number)
            break
    rows = [r.strip() for r in text.splitlines()]
    rows = [r for r in rows if r and not r.startswith(("Failed in ", "During:"))] or ["?"]
    summary = rows[0]
    if summary.startswith("No implementation of function"):
        summary += " " + next((r[3:].strip() for r in rows if r.startswith(">>>")), "")
    return ContractError(f"scan() does not compile (numba {type(e).__name__}): "
                         f"{summary[:300]}", line, text)


def _line_naming(fn: Any, name: re.Match[str] | None) -> int:
    """The first line of ``fn`` that uses the undefined ``name`` (numba does not say where)."""
    import inspect

    if name is not None:
        with contextlib.suppress(OSError, TypeError):
            lines, first = inspect.getsourcelines(fn.py_func)
            for i, text in enumerate(lines[1:], 1):
                if re.search(rf"\b{name[1]}\b", text):
                    return first + i
    return def_line(fn)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


def _check_spans(starts: Any, ends: Any, k: int, n: int, piece: PieceSpec, job: Job) -> None:
    s, e = starts[:k], ends[:k]
    if k > len(starts) or s.min() < 0 or e.max() > n or (e < s).any():
        raise ContractError(
            f"scan() emitted a key span outside its buffer in {piece.describe()}",
            def_line(job.scan), "every pair needs 0 <= starts[i] <= ends[i] <= len(buf)",
        )


def _flush_table(table: Any, outs: _Outputs, agg: int) -> None:
    from mapred import kernels

    if len(table) == 0:
        return
    outs.add("spills", 1)
    for p, run in enumerate(table.partitions(outs.nparts, outs.seed)):
        if len(run[1]):
            kernels.write_run(outs.path(p), run, agg)
            outs.add("keys", len(run[1]))


# --- plain tier -----------------------------------------------------------------------------


def _plain_records(piece: PieceSpec, progress: Progress) -> Iterator[tuple[int, bytes]]:
    """(offset, record) pairs of one piece; records without their final newline. A gzip
    piece reports its progress here (compressed bytes read); the caller counts the others'."""
    if piece.gzip:
        offset = read = 0
        try:
            with _opened(piece) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
                for n, line in enumerate(f):
                    yield offset, line[:-1] if line.endswith(b"\n") else line
                    offset += len(line)
                    if n & 0x3FFF == 0:
                        at = raw.tell()
                        progress(at - read)
                        read = at
                progress(raw.tell() - read)
        except InputChanged:
            raise
        except (OSError, EOFError, zlib.error) as e:
            raise OSError(f"cannot decompress {piece.rel}: {e}") from e
        return
    size = left = piece.end - piece.start
    at = piece.first
    with _opened(piece) as f:  # line by line: a worker never holds a whole shard
        f.seek(piece.start)
        while left > 0:
            line = f.readline(left)
            if not line:
                break
            left -= len(line)
            yield at, line[:-1] if line.endswith(b"\n") else line
            at += len(line)
    if left:
        raise InputChanged(f"input file changed during the run: {piece.rel} (expected "
                           f"{size} bytes at {piece.first}, read {size - left})")


def _map_plain(job: Job, spec: MapSpec, outs: _Outputs, progress: Progress) -> None:
    groups: dict[bytes, list[Any]] = {}
    counts: dict[str, int] = {}  # the job's own counters (ctx.count)
    held = 0
    done = 0
    for piece, offset, record in _all_records(spec, progress):
        for k, value in _call_mapper(job, record, piece, offset, counts):
            bucket = groups.get(k)
            if bucket is None:
                groups[k] = [value]
                held += PLAIN_BYTES_PER_KEY + len(k)
            else:
                bucket.append(value)
            held += PLAIN_BYTES_PER_VALUE if type(value) in _SMALL_VALUES else \
                PLAIN_BYTES_PER_VALUE + sys.getsizeof(value)  # a hot key's lines, say
        outs.add("records", 1)
        size = len(record) + 1
        outs.add("bytes_in", size)
        if not piece.gzip:
            done += size
        if done >= 1 << 20:
            progress(done)
            done = 0
        if held >= outs.budget:
            _spill(job, groups, outs)
            groups, held = {}, 0
    progress(done)
    _spill(job, groups, outs)
    for name, n in counts.items():
        outs.add(USER_COUNTER + name, n)


def _all_records(spec: MapSpec, progress: Progress) -> Iterator[tuple[PieceSpec, int, bytes]]:
    for piece in spec.pieces:
        for offset, record in _plain_records(piece, progress):
            yield piece, offset, record


def _call_mapper(job: Job, record: bytes, spec: PieceSpec, offset: int,
                 counts: dict[str, int] | None = None) -> list[Any]:
    assert job.mapper is not None
    try:
        if job.mapper_takes_ctx:
            out = job.mapper(record, MapContext(spec.rel, offset, {} if counts is None else counts))
        else:
            out = job.mapper(record)
        return pairs(out, "mapper", job)
    except ContractError as e:
        raise e.where(f"record at byte {offset} of {spec.rel}") from None
    except Exception as e:  # noqa: BLE001 - user code
        raise _user_error("mapper", e, job, f"record at byte {offset} of {spec.rel}") from None


def _user_error(fn: str, e: Exception, job: Job, where: str) -> UserCodeError:
    from mapred.job import user_traceback

    return UserCodeError(f"{fn}() raised {type(e).__name__}: {_first_line(e)} ({where})",
                         user_traceback(e, job.path))


def _spill(job: Job, groups: dict[bytes, list[Any]], outs: _Outputs) -> None:
    """Combine (if the job has a combiner), partition and write one sorted run per partition."""
    if not groups:
        return
    outs.add("spills", 1)
    if job.combiner is None:  # each key's values as they are: streamed, never copied into pairs
        keys: list[list[bytes]] = [[] for _ in range(outs.nparts)]
        for key in groups:
            keys[partition_of(key, outs.seed, outs.nparts)].append(key)
        for p, part in enumerate(keys):
            if part:
                part.sort()
                outs.add("keys", write_plain_run(outs.path(p), (
                    (k, v) for k in part for v in groups[k])))
        outs.add("pairs", sum(len(v) for v in groups.values()))
        return
    parts: list[list[tuple[bytes, Any]]] = [[] for _ in range(outs.nparts)]
    for key, values in groups.items():
        for k, v in _combine(job, key, values):
            parts[partition_of(k, outs.seed, outs.nparts)].append((k, v))
    for p, pairs in enumerate(parts):
        if pairs:
            pairs.sort(key=lambda kv: kv[0])
            write_plain_run(outs.path(p), pairs)
            outs.add("keys", len(pairs))
    pairs_in = sum(len(v) for v in groups.values())
    outs.add("pairs", pairs_in)


def _combine(job: Job, key: bytes, values: list[Any]) -> list[tuple[bytes, Any]]:
    if job.combiner is None:
        return [(key, v) for v in values]
    try:
        return pairs(job.combiner(key, iter(values)), "combiner", job)
    except ContractError as e:
        raise e.where(f"key {key[:60]!r}") from None
    except Exception as e:  # noqa: BLE001 - user code
        raise _user_error("combiner", e, job, f"key {key[:60]!r}") from None
