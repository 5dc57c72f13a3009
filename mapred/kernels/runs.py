"""Run files of the numba tier: sorted (key, value) arrays of one partition, the aggregate they
were combined with, written and memory-mapped back."""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np
from numba import njit

AGG_SUM = 0
AGG_MIN = 1
AGG_MAX = 2
AGG_BY_NAME = {"sum": AGG_SUM, "min": AGG_MIN, "max": AGG_MAX}


class Run(NamedTuple):
    """Sorted keys with values: key i is ``blob[offsets[i]:offsets[i+1]]``, value ``values[i]``."""

    offsets: np.ndarray  # int64[n + 1], offsets[0] == 0, non-decreasing, offsets[n] == len(blob)
    values: np.ndarray   # int64[n]
    blob: np.ndarray     # uint8[offsets[n]]

    def key(self, i: int) -> bytes:
        """Key i as bytes (slow path, for tests and debugging)."""
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]])


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
