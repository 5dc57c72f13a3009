"""Byte-scanning helpers for jobs' ``scan`` functions (whitespace, bytes), mmh3, and the loop that
feeds a job's ``scan`` batches into a key table.

Contracts not checked inside the hot helpers (as unchecked as plain numba indexing):
``0 <= pos`` and ``end <= len(buf)``."""

from __future__ import annotations

import numpy as np
from numba import njit

from mapred.kernels.intrinsics import cttz64, load_u32, load_u64

#: Default number of (key span, value) pairs per scan batch: 3 int64 arrays * 16384 = 384 KiB.
BATCH = 16384
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
