"""Numba tier of mapred: byte-scanning helpers, mmh3, the per-task hash table, run files, merge.

Everything compiled here is ``@njit(cache=True, nogil=True)``.  Buffers are 1-d ``uint8`` numpy
arrays (typically a read-only ``np.memmap`` of a shard).  Positions are ``int64`` byte indices.

Contracts that are *not* checked inside the hot helpers (they are as unchecked as plain numba
indexing): ``0 <= pos`` and ``end <= len(buf)``.  ``KeyTable.add_batch`` does check every span.

The hash table and key sorting live in :mod:`mapred.kernels_table`; ``KeyTable`` is re-exported
here (lazily), so ``from mapred.kernels import ...`` is the one public entry point.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np
from llvmlite import ir  # numba's own code generator (hard dependency of numba)
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

if TYPE_CHECKING:
    from mapred.kernels_table import KeyTable

__all__ = [
    "AGG_SUM", "AGG_MIN", "AGG_MAX", "AGG_BY_NAME", "BATCH",
    "is_space", "skip_space", "find_space", "find_byte", "count_byte",
    "mmh3_32", "escape_key_py",
    "Run", "KeyTable", "write_run", "open_run", "read_run_header", "merge_runs_to_tsv",
    "aggregate_scan",
]

AGG_SUM = 0
AGG_MIN = 1
AGG_MAX = 2
AGG_BY_NAME = {"sum": AGG_SUM, "min": AGG_MIN, "max": AGG_MAX}

#: Default number of (key span, value) pairs per scan batch: 3 int64 arrays * 16384 = 384 KiB.
BATCH = 16384

# ---------------------------------------------------------------------------------------------
# Low-level intrinsics: unaligned loads, count-trailing-zeros, byte swap, prefetch.
# ---------------------------------------------------------------------------------------------


def _intrinsic(fn: Callable[..., Any]) -> Any:
    """numba.extending.intrinsic, typed as Any for mypy (intrinsics are only called in njit)."""
    return intrinsic(fn)


def _data_ptr(context, builder, arrty, arr, idxty, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.gep(ary.data, [i])


def _make_load(bits: int) -> Any:
    nbty = types.uint64 if bits == 64 else types.uint32

    @_intrinsic
    def load(typingctx, arr, idx):
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint8
                and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _data_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            p = builder.bitcast(ptr, ir.IntType(bits).as_pointer())
            return builder.load(p, align=1)

        return nbty(arr, idx), codegen

    return load


#: ``load_u64(buf, i)``: the 8 bytes buf[i:i+8] as a little-endian uint64 (unaligned, unchecked).
load_u64 = _make_load(64)
#: ``load_u32(buf, i)``: the 4 bytes buf[i:i+4] as a little-endian uint32 (unaligned, unchecked).
load_u32 = _make_load(32)


@_intrinsic
def cttz64(typingctx, x):
    """Number of trailing zero bits of a non-zero uint64, as intp."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        r = builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
        return context.cast(builder, r, types.uint64, types.intp)

    return types.intp(x), codegen


@_intrinsic
def bswap64(typingctx, x):
    """Byte-reverse a uint64."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bswap(args[0])

    return types.uint64(x), codegen


@_intrinsic
def mum64(typingctx, a, b):
    """Fold of the 128-bit product of two uint64: low 64 bits ^ high 64 bits (as in wyhash)."""
    if a != types.uint64 or b != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        lo = builder.trunc(p, ir.IntType(64))
        hi = builder.trunc(builder.lshr(p, ir.Constant(i128, 64)), ir.IntType(64))
        return builder.xor(lo, hi)

    return types.uint64(a, b), codegen


@_intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line holding ``arr[idx]`` (never faults)."""
    if not (isinstance(arr, types.Array) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _data_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@_intrinsic
def _peek(typingctx, addr, idx, width):
    """Load the ``width``-byte little-endian unsigned integer at raw address addr + idx.

    ``width`` must be a literal 1 or 8; the result is uint64.  Unchecked and unaligned.  Hot
    internal helpers take (address, length) integers instead of arrays: calls with array
    arguments cost refcount traffic and block inlining in numba.
    """
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 8):
        return None
    bits = 8 * width.literal_value

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.intp)
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.inttoptr(builder.add(a, i), ir.IntType(bits).as_pointer())
        v = builder.load(ptr, align=1)
        return builder.zext(v, ir.IntType(64)) if bits < 64 else v

    return types.uint64(addr, idx, width), codegen


@_intrinsic
def _poke(typingctx, addr, val, width):
    """Store the low ``width`` (literal 1 or 8) bytes of integer ``val`` at raw ``addr``."""
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (1, 8):
        return None
    bits = 8 * width.literal_value

    def codegen(context, builder, sig, args):
        a = context.cast(builder, args[0], sig.args[0], types.intp)
        v = context.cast(builder, args[1], sig.args[1], types.uint64)
        if bits < 64:
            v = builder.trunc(v, ir.IntType(bits))
        builder.store(v, builder.inttoptr(a, ir.IntType(bits).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(addr, val, width), codegen


@njit(cache=True, nogil=True)
def _cmp_raw(pa, la, pb, lb, off):
    """Compare la bytes at raw pa with lb bytes at pb, from byte ``off`` on (<= min(la, lb)).

    Returns <0, 0, >0 like unsigned lexicographic bytes comparison (shorter prefix first).
    """
    n = min(la, lb)
    i = off
    while i + 8 <= n:
        wa = bswap64(_peek(pa, i, 8))
        wb = bswap64(_peek(pb, i, 8))
        if wa != wb:
            return -1 if wa < wb else 1
        i += 8
    while i < n:
        ca = _peek(pa, i, 1)
        cb = _peek(pb, i, 1)
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
    return -1 if la < lb else (1 if la > lb else 0)


# ---------------------------------------------------------------------------------------------
# Whitespace / token helpers (bytes.split() semantics: b' \t\n\r\x0b\x0c').
# ---------------------------------------------------------------------------------------------

_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HI1 = np.uint64(0x8080808080808080)
_ONES = np.uint64(0x0101010101010101)
_ADD9 = np.uint64(0x7777777777777777)   # 0x80 - 9: high bit set iff low7 >= 9
_ADD14 = np.uint64(0x7272727272727272)  # 0x80 - 14: high bit set iff low7 >= 14
_SP8 = np.uint64(0x2020202020202020)


@njit(cache=True, nogil=True)
def is_space(b) -> bool:
    """True iff byte value ``b`` is ASCII whitespace as bytes.split() sees it (9-13 or 32)."""
    return b == 32 or (b >= 9 and b <= 13)


@njit(cache=True, nogil=True)
def _ws_mask(w):
    """0x80 in each byte lane of the uint64 ``w`` that holds a whitespace byte, 0 elsewhere."""
    lo = w & _LO7
    rng = (lo + _ADD9) & ~(lo + _ADD14)
    sp = ~((lo ^ _SP8) + _LO7)
    return (rng | sp) & ~w & _HI1


@njit(cache=True, nogil=True)
def skip_space(buf, pos: int, end: int) -> int:
    """First index i in [pos, end) with buf[i] not whitespace, else ``end``.

    Requires 0 <= pos and end <= len(buf) (unchecked).  Returns ``end`` when pos >= end.
    """
    if pos < end and not is_space(buf[pos]):
        return pos
    while pos + 8 <= end:
        m = ~_ws_mask(load_u64(buf, pos)) & _HI1
        if m != 0:
            return pos + (cttz64(m) >> 3)
        pos += 8
    while pos < end and is_space(buf[pos]):
        pos += 1
    return min(pos, end)


@njit(cache=True, nogil=True)
def find_space(buf, pos: int, end: int) -> int:
    """First index i in [pos, end) with buf[i] whitespace, else ``end`` (same preconditions)."""
    while pos + 8 <= end:
        m = _ws_mask(load_u64(buf, pos))
        if m != 0:
            return pos + (cttz64(m) >> 3)
        pos += 8
    while pos < end and not is_space(buf[pos]):
        pos += 1
    return min(pos, end)


@njit(cache=True, nogil=True)
def find_byte(buf, pos: int, end: int, byte: int) -> int:
    """First index i in [pos, end) with buf[i] == byte, else ``end`` (same preconditions)."""
    pat = np.uint64(byte & 0xFF) * _ONES
    while pos + 8 <= end:
        y = load_u64(buf, pos) ^ pat
        m = ~(((y & _LO7) + _LO7) | y) & _HI1
        if m != 0:
            return pos + (cttz64(m) >> 3)
        pos += 8
    while pos < end and buf[pos] != byte:
        pos += 1
    return min(pos, end)


@njit(cache=True, nogil=True)
def count_byte(buf, byte: int) -> int:
    """Number of i with buf[i] == byte (vectorised by LLVM); e.g. count_byte(buf, 10) = lines."""
    b = np.uint8(byte & 0xFF)
    c = 0
    for i in range(len(buf)):
        if buf[i] == b:
            c += 1
    return c


# ---------------------------------------------------------------------------------------------
# MurmurHash3 x86_32 (== mmh3.hash(bytes, seed, signed=False)).
# ---------------------------------------------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)
_C1 = np.uint64(0xCC9E2D51)
_C2 = np.uint64(0x1B873593)


@njit(cache=True, nogil=True)
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@njit(cache=True, nogil=True)
def mmh3_32(buf, start: int, end: int, seed: int) -> np.uint32:
    """MurmurHash3_x86_32 of buf[start:end] with ``seed`` (taken mod 2**32), as uint32."""
    n = end - start
    h = np.uint64(seed) & _M32
    p = start
    for _ in range(n >> 2):
        k = (np.uint64(load_u32(buf, p)) * _C1) & _M32
        k = (_rotl32(k, 15) * _C2) & _M32
        h = _rotl32(h ^ k, 13)
        h = (h * np.uint64(5) + np.uint64(0xE6546B64)) & _M32
        p += 4
    t = n & 3
    if t:
        k = np.uint64(0)
        if t >= 3:
            k ^= np.uint64(buf[p + 2]) << np.uint64(16)
        if t >= 2:
            k ^= np.uint64(buf[p + 1]) << np.uint64(8)
        k ^= np.uint64(buf[p])
        k = (k * _C1) & _M32
        k = (_rotl32(k, 15) * _C2) & _M32
        h ^= k
    h ^= np.uint64(n) & _M32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    h ^= h >> np.uint64(16)
    return np.uint32(h)


def escape_key_py(b: bytes) -> bytes:
    r"""TSV key escaping: ``\`` -> ``\\``, TAB -> ``\t``, LF -> ``\n``, CR -> ``\r``; rest raw."""
    return (b.replace(b"\\", b"\\\\").replace(b"\t", b"\\t")
            .replace(b"\n", b"\\n").replace(b"\r", b"\\r"))


def aggregate_scan(scan, buf, table, batch: int = BATCH) -> int:
    """Drive ``scan`` over all of ``buf`` feeding ``table`` (a KeyTable on ``buf``); return pairs.

    ``scan(buf, pos, starts, ends, values) -> (n, new_pos)`` is a job's kernel (jobs/wordcount.py).
    """
    starts = np.empty(batch, np.int64)
    ends = np.empty(batch, np.int64)
    values = np.empty(batch, np.int64)
    pos, end, total = 0, len(buf), 0
    while pos < end:
        n, new_pos = scan(buf, pos, starts, ends, values)
        if n:
            table.add_batch(starts, ends, values, n)
            total += n
        elif new_pos == pos:
            raise RuntimeError(f"scan made no progress at byte {pos}")
        pos = new_pos
    return total


class Run(NamedTuple):
    """Sorted keys with values: key i is ``blob[offsets[i]:offsets[i+1]]``, value ``values[i]``."""

    offsets: np.ndarray  # int64[n + 1], offsets[0] == 0, non-decreasing, offsets[n] == len(blob)
    values: np.ndarray   # int64[n]
    blob: np.ndarray     # uint8[offsets[n]]

    def key(self, i: int) -> bytes:
        """Key i as bytes (slow path, for tests and debugging)."""
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]])


# ---------------------------------------------------------------------------------------------
# Run files.
# ---------------------------------------------------------------------------------------------

_MAGIC = b"MRN1"
_HDR = struct.Struct("<4sIQQ")  # magic, agg, n, blob_len: 24 bytes


def write_run(path: str | os.PathLike, run: Run, agg: int) -> int:
    """Write ``run`` to ``path`` (created/truncated); return the number of bytes written."""
    offsets = np.ascontiguousarray(run.offsets, dtype="<i8")
    values = np.ascontiguousarray(run.values, dtype="<i8")
    blob = np.ascontiguousarray(run.blob, dtype=np.uint8)
    n = len(values)
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[n] != len(blob):
        raise ValueError("inconsistent run: offsets do not match values/blob")
    with open(path, "wb") as f:
        f.write(_HDR.pack(_MAGIC, int(agg), n, len(blob)))
        f.write(offsets.data)
        f.write(values.data)
        f.write(blob.data)
    return _HDR.size + 8 * (2 * n + 1) + len(blob)


def read_run_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """(agg, n, blob_len) of a run file; ValueError (naming the path) if it is malformed."""
    with open(path, "rb") as f:
        head = f.read(_HDR.size)
        size = os.fstat(f.fileno()).st_size
    if len(head) < _HDR.size:
        raise ValueError(f"{path}: run file too short for a header ({size} bytes)")
    magic, agg, n, blob_len = _HDR.unpack(head)
    if magic != _MAGIC:
        raise ValueError(f"{path}: bad run file magic {magic!r}")
    if agg not in (AGG_SUM, AGG_MIN, AGG_MAX):
        raise ValueError(f"{path}: bad agg {agg} in run file header")
    expect = _HDR.size + 8 * (2 * n + 1) + blob_len
    if size != expect:
        raise ValueError(f"{path}: run file has {size} bytes, header says {expect} "
                         f"(n={n}, blob_len={blob_len}); truncated or corrupt")
    return agg, n, blob_len


@njit(cache=True, nogil=True)
def _offsets_ok(offsets, blob_len):
    n = len(offsets) - 1
    if offsets[0] != 0 or offsets[n] != blob_len:
        return False
    for i in range(n):
        if offsets[i + 1] < offsets[i]:
            return False
    return True


def open_run(path: str | os.PathLike) -> Run:
    """Memory-map a run file written by write_run (read-only arrays); ValueError if malformed."""
    _agg, n, blob_len = read_run_header(path)
    raw = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))  # >= 32 bytes, never empty
    a = _HDR.size
    b = a + 8 * (n + 1)
    c = b + 8 * n
    offsets = raw[a:b].view("<i8")
    if not _offsets_ok(offsets, blob_len):
        raise ValueError(f"{path}: corrupt run file offsets")
    return Run(offsets, raw[b:c].view("<i8"), raw[c:c + blob_len])


# ---------------------------------------------------------------------------------------------
# Reduce: k-way merge of sorted runs into escaped TSV.
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _cur_key(runs, pos, r):
    """(address, length) of the current key of run r; runs[r] = (offsets, values, blob, n)."""
    o = runs[r, 0] + 8 * pos[r]
    a = np.int64(_peek(o, 0, 8))
    return runs[r, 2] + a, np.int64(_peek(o, 8, 8)) - a


@njit(cache=True, nogil=True)
def _less(runs, pos, ra, rb):
    """Is the current key of run ra before that of run rb (ties by run index)?"""
    pa, la = _cur_key(runs, pos, ra)
    pb, lb = _cur_key(runs, pos, rb)
    c = _cmp_raw(pa, la, pb, lb, 0)
    return c < 0 or (c == 0 and ra < rb)


@njit(cache=True, nogil=True)
def _sift_down(runs, pos, heap, n, i):
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and _less(runs, pos, heap[c + 1], heap[c]):
            c += 1
        if not _less(runs, pos, heap[c], heap[i]):
            return
        heap[c], heap[i] = heap[i], heap[c]
        i = c


@njit(cache=True, nogil=True)
def _heapify(runs, pos, heap, n):
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(runs, pos, heap, n, i)


@njit(cache=True, nogil=True)
def _pop_advance(runs, pos, heap, hsize):
    """Advance the run at the heap top by one key; return the new heap size."""
    r = heap[0]
    pos[r] += 1
    if pos[r] >= runs[r, 3]:
        hsize -= 1
        heap[0] = heap[hsize]
    if hsize > 1:
        _sift_down(runs, pos, heap, hsize, 0)
    return hsize


@njit(cache=True, nogil=True)
def _write_int(out, w, v):
    """Write int64 v in decimal at out[w:]; return the new write position."""
    if v < 0:
        out[w] = 45
        w += 1
        u = np.uint64(-(v + 1)) + np.uint64(1)
    else:
        u = np.uint64(v)
    nd = 1
    t = u
    while t >= np.uint64(10):
        t //= np.uint64(10)
        nd += 1
    for i in range(nd):
        out[w + nd - 1 - i] = np.uint8(np.uint64(48) + u % np.uint64(10))
        u //= np.uint64(10)
    return w + nd


@njit(cache=True, nogil=True)
def _merge_fill(runs, pos, heap, state, agg, out):
    """Merge from the saved state into ``out``; return (bytes written, keys written, status).

    ``runs`` is int64[k, 4]: addresses of each run's offsets, values and blob, and its key
    count (the caller keeps the arrays alive).  status 0: all runs exhausted; 1: ``out`` is full,
    call again after flushing it; 2: the next key does not fit into an empty ``out``: state[1]
    is the size needed.  state[0] is the heap size.
    """
    hsize = state[0]
    cap = len(out)
    w = 0
    nk = 0
    while hsize > 0:
        r = heap[0]
        pk, ln = _cur_key(runs, pos, r)
        need = 2 * ln + 22  # escaped key, tab, sign and <= 19 digits, newline
        if w + need > cap:
            state[0] = hsize
            if w == 0:
                state[1] = need
                return w, nk, 2
            return w, nk, 1
        for q in range(ln):
            c = np.uint8(_peek(pk, q, 1))
            if c == 92 or c == 9 or c == 10 or c == 13:
                out[w] = 92
                out[w + 1] = 92 if c == 92 else (116 if c == 9 else (110 if c == 10 else 114))
                w += 2
            else:
                out[w] = c
                w += 1
        acc = np.int64(_peek(runs[r, 1], 8 * pos[r], 8))
        hsize = _pop_advance(runs, pos, heap, hsize)
        while hsize > 0:
            r2 = heap[0]
            p2, l2 = _cur_key(runs, pos, r2)
            if l2 != ln or _cmp_raw(pk, ln, p2, ln, 0) != 0:
                break
            v = np.int64(_peek(runs[r2, 1], 8 * pos[r2], 8))
            if agg == 0:
                acc += v
            elif agg == 1:
                acc = min(acc, v)
            else:
                acc = max(acc, v)
            hsize = _pop_advance(runs, pos, heap, hsize)
        out[w] = 9
        w = _write_int(out, w + 1, acc)
        out[w] = 10
        w += 1
        nk += 1
    state[0] = 0
    return w, nk, 0


def _write_all(out: BinaryIO, mv: memoryview) -> None:
    """out.write(mv) until all is written (raw files may write less than asked)."""
    while len(mv):
        n = out.write(mv)
        if n is None or n >= len(mv):
            return
        mv = mv[n:]


def merge_runs_to_tsv(runs: list[Run], agg: int, out: BinaryIO,
                      buf_size: int = 1 << 20) -> tuple[int, int]:
    """Merge sorted runs, aggregating equal keys with ``agg``, into ``key\\tvalue\\n`` lines.

    Keys are escaped as escape_key_py does; lines come out sorted by key bytes.  Writes to the
    binary file object ``out`` in chunks of at most ``buf_size`` bytes (unless one line is
    longer).  Returns (distinct keys written, bytes written).
    """
    if agg not in (AGG_SUM, AGG_MIN, AGG_MAX):
        raise ValueError(f"unknown agg {agg!r}")
    keep = []  # the arrays whose addresses _merge_fill reads: alive until we return
    for r in runs:
        if len(r.values) == 0:
            continue
        arrs = (np.ascontiguousarray(r.offsets, dtype=np.int64),
                np.ascontiguousarray(r.values, dtype=np.int64),
                np.ascontiguousarray(r.blob, dtype=np.uint8))
        if len(arrs[0]) != len(arrs[1]) + 1 or not _offsets_ok(arrs[0], len(arrs[2])):
            raise ValueError("inconsistent run: offsets do not match values/blob")
        keep.append(arrs)
    k = len(keep)
    if k == 0:
        return 0, 0
    meta = np.empty((k, 4), np.int64)
    for i, (o, v, b) in enumerate(keep):
        meta[i] = (o.ctypes.data, v.ctypes.data, b.ctypes.data, len(v))
    pos = np.zeros(k, np.int64)
    heap = np.arange(k, dtype=np.int64)
    state = np.array([k, 0], np.int64)
    _heapify(meta, pos, heap, k)
    outbuf = np.empty(max(int(buf_size), 64), np.uint8)
    keys = nbytes = 0
    while True:
        w, nk, status = _merge_fill(meta, pos, heap, state, int(agg), outbuf)
        if w:
            _write_all(out, outbuf.data[:w])
            nbytes += w
        keys += nk
        if status == 0:
            break
        if status == 2:
            outbuf = np.empty(int(state[1]), np.uint8)
    del keep  # (explicitly: meta's addresses are dead from here on)
    return keys, nbytes


def __getattr__(name: str):
    """Lazy re-export of mapred.kernels_table.KeyTable (that module imports this one)."""
    if name == "KeyTable":
        from mapred.kernels_table import KeyTable

        return KeyTable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
