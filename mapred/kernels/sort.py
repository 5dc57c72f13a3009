"""Sorting a key table's entries into runs: by partition, then radix on the inline key words,
refined on whole keys where those tie; and the raw copies that build the run arrays."""

from __future__ import annotations

import numpy as np
from numba import njit

from mapred.kernels.intrinsics import _cmp_raw, _peek, _poke, bswap64
from mapred.kernels.tokens import mmh3_32

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_LOW56 = np.uint64(0x00FFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def _copy_raw(dst, src, n):
    """Copy n bytes from raw address src to raw address dst (non-overlapping)."""
    i = 0
    while i + 8 <= n:
        _poke(dst + i, _peek(src, i, 8), 8)
        i += 8
    while i < n:
        _poke(dst + i, _peek(src, i, 1), 1)
        i += 1


@njit(cache=True, nogil=True, inline="always")
def _low_bytes(k):
    """uint64 with the low k bytes set (k <= 0: none, k >= 8: all); branch-free."""
    half = np.uint64(4 * min(max(k, 0), 8))
    return ((_U1 << half) << half) - _U1


@njit(cache=True, nogil=True)
def _load_le(addr, k, limit):
    """The k (<= 8) bytes at raw address ``addr`` as a zero-padded little-endian uint64.

    ``limit`` is an address up to which (exclusive) reading is allowed; addr + k <= limit.
    """
    if addr + 8 <= limit:
        return _peek(addr, 0, 8) & _low_bytes(k)
    w = _U0
    for i in range(k):
        w |= _peek(addr, i, 1) << np.uint64(8 * i)
    return w


_EW = 8          # int64 words per entry: (len, key words 0..4, value, start) = one cache line


@njit(cache=True, nogil=True)
def _radix_sort(a, tmp, lo_bit):
    """Stable LSD radix sort of uint64 ``a`` by bits lo_bit..63 (11-bit digits); ``tmp`` is
    scratch of the same size.  Returns whichever of the two holds the result."""
    n = len(a)
    cnt = np.empty(2048, np.int64)
    src, dst = a, tmp
    bit = lo_bit
    while bit < 64:
        sh = np.uint64(bit)
        cnt[:] = 0
        for i in range(n):
            cnt[np.int64((src[i] >> sh) & np.uint64(2047))] += 1
        if cnt.max() < n:  # else every element has this digit: nothing to do
            tot = 0
            for d in range(2048):
                c = cnt[d]
                cnt[d] = tot
                tot += c
            for i in range(n):
                x = src[i]
                d = np.int64((x >> sh) & np.uint64(2047))
                dst[cnt[d]] = x
                cnt[d] += 1
            src, dst = dst, src
        bit += 11
    return src


_NT = 3  # sort-key depths computed from the entries' inline key words (bytes 0..20)


@njit(cache=True, nogil=True)
def _sort_order(buf, ent, count, nparts, seed):
    """Entries sorted by (partition, key bytes): (order, partition bounds, starts, lens, values).

    One radix sort of packed words ``partition | top key bits | entry number`` (top = the first
    7 key bytes big-endian << 8 | min(len, 7), which orders keys by those bytes then length),
    then groups that tie on the packed bits are finished by _refine.  ``tops[e, d]`` is that
    sort key for key bytes 7d..7d+6, for d < _NT from the entry's key words (no buffer access).
    """
    pbits = 0
    while (1 << pbits) < nparts:
        pbits += 1
    ibits = 1
    while (1 << ibits) < count:
        ibits += 1
    kbits = max(64 - pbits - ibits, 0)
    tops = np.empty((count, _NT), np.uint64)
    packed = np.empty(count, np.uint64)
    starts = np.empty(count, np.int64)
    lens = np.empty(count, np.int64)
    vals = np.empty(count, np.int64)
    bounds = np.zeros(nparts + 1, np.int64)
    for e in range(count):
        b = _EW * e
        ln = ent[b]
        lens[e] = ln
        vals[e] = ent[b + 6]
        s = ent[b + 7]
        starts[e] = s
        for d in range(_NT):
            o = 7 * d
            q = o >> 3
            r = np.uint64(8 * (o & 7))
            w = np.uint64(ent[b + 1 + q]) >> r
            if r > 0:
                w |= np.uint64(ent[b + 2 + q]) << (np.uint64(64) - r)
            tops[e, d] = bswap64(w & _LOW56) | np.uint64(min(max(ln - o, 0), 7))
        p = np.int64(mmh3_32(buf, s, s + ln, seed)) % nparts
        bounds[p + 1] += 1
        w = np.uint64(e)
        if kbits > 0:
            w |= (tops[e, 0] >> np.uint64(64 - kbits)) << np.uint64(ibits)
        if pbits > 0:
            w |= np.uint64(p) << np.uint64(64 - pbits)
        packed[e] = w
    for p in range(nparts):
        bounds[p + 1] += bounds[p]
    packed = _radix_sort(packed, np.empty(count, np.uint64), ibits)
    order = np.empty(count, np.int64)
    imask = (_U1 << np.uint64(ibits)) - _U1
    for k in range(count):
        order[k] = np.int64(packed[k] & imask)
    _refine(order, packed, ibits, tops, buf, starts, lens)
    return order, bounds, starts, lens, vals


@njit(cache=True, nogil=True)
def _chunk7(addr, r, limit):
    """Sort key of the 7 bytes at raw addr of which r (>= 0) are real: BE << 8 | min(r, 7)."""
    k = min(r, 7)
    return bswap64(_load_le(addr, k, limit)) | np.uint64(k)


@njit(cache=True, nogil=True)
def _push(stack, sp, lo, hi, d):
    if sp + 3 > len(stack):
        bigger = np.empty(2 * len(stack), np.int64)
        bigger[:sp] = stack[:sp]
        stack = bigger
    stack[sp] = lo
    stack[sp + 1] = hi
    stack[sp + 2] = d
    return stack, sp + 3


@njit(cache=True, nogil=True)
def _cmp_keys(x, y, d, tops, base, starts, lens):
    """Compare keys x and y that are known equal before byte 7d (see _refine)."""
    while d < _NT:
        tx = tops[x, d]
        ty = tops[y, d]
        if tx != ty:
            return -1 if tx < ty else 1
        if (tx & np.uint64(7)) != 7:
            return 0
        d += 1
    return _cmp_raw(base + starts[x], lens[x], base + starts[y], lens[y], 7 * d)


@njit(cache=True, nogil=True)
def _refine(order, packed, ibits, tops, buf, starts, lens):
    """Finish sorting ``order`` (sorted by packed >> ibits) by full key bytes, in place.

    MSD: a group that ties on the packed bits is sorted by ``tops`` (depth 0); a group that
    ties on the 7 bytes + length class of depth d and goes on (rem == 7) is sorted by the next
    7 bytes (depth d + 1); groups of <= 16 keys by insertion sort on the full bytes.
    """
    base = np.int64(buf.ctypes.data)
    limit = base + len(buf)
    stack = np.empty(96, np.int64)
    sp = 0
    m = len(order)
    sh = np.uint64(ibits)
    i = 0
    while i < m:
        t = packed[i] >> sh
        j = i + 1
        while j < m and (packed[j] >> sh) == t:
            j += 1
        if j - i > 1:
            stack, sp = _push(stack, sp, i, j, 0)
        i = j
    while sp > 0:
        sp -= 3
        lo = stack[sp]
        hi = stack[sp + 1]
        d = stack[sp + 2]
        off = 7 * d
        if hi - lo <= 16:
            for a in range(lo + 1, hi):
                x = order[a]
                b = a
                while b > lo:
                    y = order[b - 1]
                    if _cmp_keys(x, y, d, tops, base, starts, lens) >= 0:
                        break
                    order[b] = y
                    b -= 1
                order[b] = x
            continue
        v = np.empty(hi - lo, np.uint64)
        for a in range(lo, hi):
            x = order[a]
            v[a - lo] = tops[x, d] if d < _NT else _chunk7(base + starts[x] + off,
                                                           lens[x] - off, limit)
        perm = np.argsort(v)
        tmp = order[lo:hi].copy()
        for a in range(hi - lo):
            order[lo + a] = tmp[perm[a]]
        a = 0
        while a < hi - lo:
            t = v[perm[a]]
            b = a + 1
            while b < hi - lo and v[perm[b]] == t:
                b += 1
            if b - a > 1 and (t & np.uint64(7)) == 7:
                stack, sp = _push(stack, sp, lo + a, lo + b, d + 1)
            a = b


@njit(cache=True, nogil=True)
def _build_runs(order, buf, starts, lens, vals):
    """Concatenated (offsets, values, blob) of the keys order[0], order[1], ...

    Keys are copied in entry order (= increasing first occurrence in buf: sequential reads of
    the big buffer, scattered writes into the smaller blob).
    """
    m = len(order)
    offsets = np.empty(m + 1, np.int64)
    values = np.empty(m, np.int64)
    rank = np.empty(m, np.int64)
    offsets[0] = 0
    for k in range(m):
        x = order[k]
        offsets[k + 1] = offsets[k] + lens[x]
        values[k] = vals[x]
        rank[x] = k
    blob = np.empty(offsets[m], np.uint8)
    base = np.int64(buf.ctypes.data)
    bbase = np.int64(blob.ctypes.data)
    for e in range(m):
        _copy_raw(bbase + offsets[rank[e]], base + starts[e], lens[e])
    return offsets, values, blob
