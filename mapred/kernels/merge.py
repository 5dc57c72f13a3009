"""The k-way merge of sorted run files into TSV lines (a heap of run cursors, aggregating equal
keys), written in large buffers."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from numba import njit

from mapred.kernels.intrinsics import _cmp_raw, _peek
from mapred.kernels.runs import AGG_MAX, AGG_MIN, AGG_SUM, Run, _offsets_ok


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
