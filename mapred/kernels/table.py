"""Numba tier, part 2: the per-map-task hash aggregation table and sorting its keys into runs.

``KeyTable`` is re-exported by :mod:`mapred.kernels`; import it from there.

Table layout (compact open addressing, like CPython's dict): ``index`` is int64[cap] (cap a power
of two, linear probing, doubled by rehashing the index alone when half full); a used slot holds
``tag << 32 | (e + 1)`` with tag = the high 32 bits of the key's 64-bit hash (home slot =
``tag & (cap - 1)``) and e the entry number.  Entries are dense, in insertion order, one 64-byte
cache line each: ``ent[8e:8e+8]`` = (length, w0, w1, w2, w3, w4, value, start) with w0..w4 =
key bytes 0..39 as zero-padded little-endian words and start = the key's first occurrence in
the buffer.  Keys are compared exactly: length and inline words, then (keys over 40 bytes)
the remaining bytes against the first occurrence.  Only touched memory costs page faults (slow
in these VMs): the per-key footprint is 64 bytes of entry + 16-32 bytes of index.
"""

from __future__ import annotations

import mmap
import sys

import numpy as np
from numba import njit

from mapred.kernels.intrinsics import _cmp_raw, _peek, mum64, prefetch
from mapred.kernels.runs import AGG_MAX, AGG_MIN, AGG_SUM, Run
from mapred.kernels.sort import (
    _EW,
    _U0,
    _build_runs,
    _load_le,
    _low_bytes,
    _sort_order,
)

# wyhash-style secrets: odd, mixed bits, no bytes that text is made of
_P0 = np.uint64(0xA0761D6478BD642F)
_P1 = np.uint64(0xE7037ED1A0B428DB)
_P2 = np.uint64(0x8EBC6AF09C88C6E3)
_P3 = np.uint64(0x589965CC75374CC3)




_U32 = np.uint64(32)
_GROUP = 128     # pairs per prefetch group in _insert_batch
_INLINE = 40     # key bytes held in an entry (5 words)
_HIMASK = np.int64(-(1 << 32))  # 0xFFFFFFFF00000000
_LOMASK = np.int64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _word(base, nbuf, s, ln, q):
    """Key word q (bytes 8q..8q+7, zero padded) of the ln-byte key at base + s."""
    k = ln - 8 * q
    if k <= 0:
        return _U0
    p = s + 8 * q
    if p + 8 <= nbuf:
        return _peek(base + p, 0, 8) & _low_bytes(k)
    return _load_le(base + p, min(k, 8), base + nbuf)


@njit(cache=True, nogil=True, inline="always")
def _key_words(base, nbuf, s, ln):
    """(w0, w1): bytes 0..7 and 8..15, zero padded, of the ln-byte key at base + s."""
    if s + 16 <= nbuf:
        return (_peek(base + s, 0, 8) & _low_bytes(ln),
                _peek(base + s, 8, 8) & _low_bytes(ln - 8))
    return _word(base, nbuf, s, ln, 0), _word(base, nbuf, s, ln, 1)


@njit(cache=True, nogil=True)
def _hash_tail(addr, ln, h):
    """Fold key bytes 16..ln-1 (ln > 16) of the key at raw ``addr`` into h."""
    p = 16
    while p + 16 <= ln:
        h = mum64(h ^ _peek(addr, p, 8) ^ _P2, _peek(addr, p + 8, 8) ^ _P3)
        p += 16
    if p < ln:  # the last 16 key bytes, shifted so only bytes p.. remain (ln - p < 16)
        r = ln - p
        if r > 8:
            lo = _peek(addr, p, 8)
            hi = _peek(addr, ln - 8, 8) >> np.uint64(8 * (16 - r))
        else:
            lo = _peek(addr, ln - 8, 8) >> np.uint64(8 * (8 - r))
            hi = _U0
        h = mum64(h ^ lo ^ _P2, hi ^ _P3)
    return h


@njit(cache=True, nogil=True, inline="always")
def _key_tag(addr, ln, w0, w1):
    """High 32 bits of the 64-bit (wyhash-style) hash of the ln-byte key at raw ``addr`` whose
    first 16 bytes are the words w0, w1."""
    h = mum64(w0 ^ _P0, w1 ^ _P1 ^ np.uint64(ln))
    if ln > 16:
        h = _hash_tail(addr, ln, h)
    return np.int64(mum64(h ^ _P2, np.uint64(ln) ^ _P3) >> _U32)


@njit(cache=True, nogil=True)
def tag_of(buf, s, ln):
    """The table tag of key buf[s:s+ln] (for tests: finding tag collisions)."""
    base = np.int64(buf.ctypes.data)
    w0, w1 = _key_words(base, len(buf), s, ln)
    return _key_tag(base + s, ln, w0, w1)


@njit(cache=True, nogil=True, inline="always")
def _agg(cur, v, agg):
    """cur combined with v by AGG_SUM (wrapping), AGG_MIN or AGG_MAX."""
    return cur + v if agg == 0 else (min(cur, v) if agg == 1 else max(cur, v))


@njit(cache=True, nogil=True, inline="always")
def _long_eq(w2, w3, w4, start, base, nbuf, s, ln):
    """Do bytes 16.. of the stored key (words w2..w4, first occurrence at start) equal those
    of the ln-byte (> 16) key at base + s?  (Lengths and bytes 0..15 are known equal.)
    Scalars only: an inlined helper taking arrays costs refcount traffic per call."""
    if w2 != np.int64(_word(base, nbuf, s, ln, 2)):
        return False
    if ln <= 24:
        return True
    if w3 != np.int64(_word(base, nbuf, s, ln, 3)):
        return False
    if ln <= 32:
        return True
    if w4 != np.int64(_word(base, nbuf, s, ln, 4)):
        return False
    return ln <= _INLINE or _cmp_raw(base + start, ln, base + s, ln, _INLINE) == 0


@njit(cache=True, nogil=True)
def _prepare_group(base, nbuf, starts, ends, g0, g1, index, ent, scratch):
    """Passes 1 and 2 for pairs g0..g1-1: key words and tags into ``scratch`` rows 0-2,
    prefetching each pair's home index slot, then the entry that slot points to."""
    mask = len(index) - 1
    tags = scratch[0]
    for i in range(g0, g1):
        s = starts[i]
        ln = ends[i] - s
        q0, q1 = _key_words(base, nbuf, s, ln)
        tag = _key_tag(base + s, ln, q0, q1)
        tags[i - g0] = tag
        scratch[1, i - g0] = np.int64(q0)
        scratch[2, i - g0] = np.int64(q1)
        prefetch(index, tag & mask)
    for j in range(g1 - g0):
        cand = index[tags[j] & mask]
        if cand != 0:
            prefetch(ent, ((cand & _LOMASK) - 1) * _EW)


@njit(cache=True, nogil=True)
def _insert_misses(base, nbuf, starts, ends, values, g0, nm, index, ent, count, agg, scratch):
    """Pass 4: insert the pairs listed in scratch[3, :nm] (not found by pass 3) as new keys,
    or aggregate into a key inserted earlier in this pass.  Returns the new key count."""
    mask = len(index) - 1
    for m in range(nm):
        t = scratch[3, m]
        s = starts[t]
        ln = ends[t] - s
        tag = scratch[0, t - g0]
        k0 = scratch[1, t - g0]
        k1 = scratch[2, t - g0]
        slot = tag & mask
        while True:
            cur = index[slot]
            if cur == 0:
                index[slot] = (tag << 32) | (count + 1)
                b = _EW * count
                ent[b] = ln
                ent[b + 1] = k0
                ent[b + 2] = k1
                for q in range(2, 5):
                    ent[b + 1 + q] = np.int64(_word(base, nbuf, s, ln, q))
                ent[b + 6] = values[t]
                ent[b + 7] = s
                count += 1
                break
            if (cur & _HIMASK) == tag << 32:
                b = _EW * ((cur & _LOMASK) - 1)
                if ent[b] == ln and ent[b + 1] == k0 and ent[b + 2] == k1 and (
                        ln <= 16 or _long_eq(ent[b + 3], ent[b + 4], ent[b + 5], ent[b + 7],
                                             base, nbuf, s, ln)):
                    ent[b + 6] = _agg(ent[b + 6], values[t], agg)
                    break
            slot = (slot + 1) & mask
    return count


@njit(cache=True, nogil=True)
def _insert_batch(buf, index, ent, state, starts, ends, values, i0, n, agg, scratch):
    """Aggregate pairs i0..n-1 into the table (see the module docstring for the layout).

    Returns n when all pairs were consumed; g (i0 <= g < n) when the table must grow before
    the group of pairs starting at g (pairs before g are in: grow, call again from g);
    -1 - i when pair i has an invalid span (then nothing of this call was inserted).
    state = [distinct keys, key limit].  Group prefetching, per group of G pairs (``scratch``
    is int64[4, G]: tag, key words 0 and 1, misses): hash and prefetch the index slots, then
    the entries (_prepare_group); aggregate into existing keys, noting the misses (here);
    insert those (_insert_misses; a key new twice in a group is found by its second probe).
    Separate small loops compile much better than one loop doing everything (measured: one
    pipelined loop was ~1.5x slower even with all data in cache), and the cache misses of a
    whole group overlap.
    """
    nbuf = len(buf)
    for i in range(i0, n):
        if starts[i] < 0 or ends[i] < starts[i] or ends[i] > nbuf:
            return -1 - i
    base = np.int64(buf.ctypes.data)
    mask = len(index) - 1
    count = state[0]
    limit = state[1]
    grp = scratch.shape[1]
    tags = scratch[0]
    w0s = scratch[1]
    w1s = scratch[2]
    miss = scratch[3]
    for g0 in range(i0, n, grp):
        g1 = min(g0 + grp, n)
        if count + (g1 - g0) > limit:
            state[0] = count
            return g0
        _prepare_group(base, nbuf, starts, ends, g0, g1, index, ent, scratch)
        nm = 0
        for t in range(g0, g1):
            s = starts[t]
            ln = ends[t] - s
            tag = tags[t - g0]
            tagw = tag << 32
            k0 = w0s[t - g0]
            k1 = w1s[t - g0]
            slot = tag & mask
            while True:
                cur = index[slot]
                if cur == 0:
                    miss[nm] = t
                    nm += 1
                    break
                if (cur & _HIMASK) == tagw:
                    b = _EW * ((cur & _LOMASK) - 1)
                    if ent[b] == ln and ent[b + 1] == k0 and ent[b + 2] == k1 and (
                            ln <= 16 or _long_eq(ent[b + 3], ent[b + 4], ent[b + 5], ent[b + 7],
                                                 base, nbuf, s, ln)):
                        ent[b + 6] = _agg(ent[b + 6], values[t], agg)
                        break
                slot = (slot + 1) & mask
        if nm:
            count = _insert_misses(base, nbuf, starts, ends, values, g0, nm, index, ent, count,
                                   agg, scratch)
    state[0] = count
    return n


@njit(cache=True, nogil=True)
def _rehash(index, nindex):
    """Re-insert every used slot of ``index`` into the empty, larger ``nindex``."""
    mask = len(nindex) - 1
    for i in range(len(index)):
        v = index[i]
        if v == 0:
            continue
        j = (v >> 32) & mask
        while nindex[j] != 0:
            j = (j + 1) & mask
        nindex[j] = v


def _aligned_empty(n: int) -> np.ndarray:
    """np.empty(n, int64) starting on a 64-byte boundary (so entries are single cache lines)."""
    raw = np.empty(n + 8, np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + n]


_RESERVE_BYTES = 1 << 33  # virtual address space reserved for a table's entries (8 GiB)
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


def _reserve_entries() -> np.ndarray | None:
    """A huge int64 array backed by an uncommitted anonymous mapping, or None if refused.

    Pages are only materialised when written, so entries never need to be copied when the
    table grows: copying into fresh memory (page faults) was the main cost of growth here.
    """
    if not _MAP_NORESERVE:
        return None
    try:
        m = mmap.mmap(-1, _RESERVE_BYTES,
                      flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
    except (OSError, ValueError, OverflowError):
        return None
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return np.frombuffer(m, np.int64)


class KeyTable:
    """Per-map-task aggregation of (key span of ``buf``, int64 value) pairs.

    ``buf`` (1-d uint8 array) must stay alive and unchanged while the table is used: keys are
    stored as spans of it.  ``agg`` is AGG_SUM (wrapping int64), AGG_MIN or AGG_MAX.
    """

    def __init__(self, buf: np.ndarray, agg: int = AGG_SUM, capacity: int = 1024) -> None:
        if agg not in (AGG_SUM, AGG_MIN, AGG_MAX):
            raise ValueError(f"unknown agg {agg!r}")
        if not isinstance(buf, np.ndarray) or buf.ndim != 1 or buf.dtype != np.uint8:
            raise TypeError("buf must be a 1-d uint8 numpy array")
        self.buf = buf if buf.flags.c_contiguous else np.ascontiguousarray(buf)
        self.agg = int(agg)
        cap = 16
        while cap < 2 * capacity:
            cap *= 2
        self._index = np.zeros(cap, np.int64)
        ent = _reserve_entries()
        self._ent = ent if ent is not None else _aligned_empty(_EW * (cap // 2))
        self._state = np.array([0, cap // 2], np.int64)
        self._scratch = np.empty((4, _GROUP), np.int64)

    def __len__(self) -> int:
        return int(self._state[0])

    @property
    def capacity(self) -> int:
        """Number of distinct keys the table holds before it grows (doubles)."""
        return int(self._state[1])

    def add_batch(self, starts: np.ndarray, ends: np.ndarray, values: np.ndarray, n: int) -> None:
        """Aggregate the n pairs (buf[starts[i]:ends[i]], values[i]).

        Raises ValueError if a span is not within buf; pairs of the batch before the first bad
        one may have been aggregated (those of the current growth step are not).
        """
        n = int(n)
        if n < 0 or n > len(starts) or n > len(ends) or n > len(values):
            raise ValueError(f"n={n} out of range for the batch arrays")
        i = 0
        while True:
            r = _insert_batch(self.buf, self._index, self._ent, self._state, starts, ends,
                              values, i, n, self.agg, self._scratch)
            if r >= n:
                return
            if r < 0:
                bad = -1 - r
                raise ValueError(f"pair {bad}: span [{starts[bad]}, {ends[bad]}) not within "
                                 f"buffer of {len(self.buf)} bytes")
            self._grow()
            i = r

    def _grow(self) -> None:
        cap = 2 * len(self._index)
        index = np.zeros(cap, np.int64)
        _rehash(self._index, index)
        self._index = index
        if len(self._ent) < _EW * (cap // 2):
            count = len(self)
            ent = _aligned_empty(_EW * (cap // 2))
            ent[:_EW * count] = self._ent[:_EW * count]
            self._ent = ent
        self._state[1] = cap // 2

    def partitions(self, nparts: int, seed: int) -> list[Run]:
        """One Run per partition p: keys with mmh3_32(key, seed) % nparts == p, sorted by bytes."""
        if nparts < 1:
            raise ValueError("nparts must be >= 1")
        order, bounds, starts, lens, vals = _sort_order(self.buf, self._ent, len(self),
                                                        int(nparts), int(seed))
        offsets, values, blob = _build_runs(order, self.buf, starts, lens, vals)
        runs = []
        for p in range(nparts):
            a, b = bounds[p], bounds[p + 1]
            runs.append(Run(offsets[a:b + 1] - offsets[a], values[a:b],
                            blob[offsets[a]:offsets[b]]))
        return runs
