"""Numba tier of mapred: byte-scanning helpers, mmh3, the per-task key table, run files, merge.

Everything compiled here is ``@njit(cache=True, nogil=True)``. Buffers are 1-d ``uint8`` numpy
arrays (typically a read-only ``np.memmap`` of a shard). Positions are ``int64`` byte indices.
``KeyTable.add_batch`` checks every span; the hot helpers do not (see ``tokens``).

``from mapred.kernels import ...`` is the one public entry point (jobs import their helpers from
here). The submodules, each importing only the ones before it:

    intrinsics  LLVM intrinsics: unaligned loads, cttz, bswap, 128-bit multiply, prefetch, memcmp
    tokens      whitespace and byte scanning, mmh3, the scan-to-table loop
    runs        run files: sorted (key, value) arrays, written and memory-mapped back
    sort        the key table's sort: radix on inline key words, refined on whole keys
    table       ``KeyTable``: the per-task open-addressing hash table of keys and aggregates
    merge       k-way merge of run files into TSV
"""

from mapred.kernels.merge import merge_runs_to_tsv
from mapred.kernels.runs import (
    AGG_BY_NAME,
    AGG_MAX,
    AGG_MIN,
    AGG_SUM,
    Run,
    open_run,
    read_run_header,
    write_run,
)
from mapred.kernels.table import KeyTable
from mapred.kernels.tokens import (
    BATCH,
    aggregate_scan,
    count_byte,
    escape_key_py,
    find_byte,
    find_space,
    is_space,
    mmh3_32,
    skip_space,
)

__all__ = [
    "AGG_SUM", "AGG_MIN", "AGG_MAX", "AGG_BY_NAME", "BATCH",
    "is_space", "skip_space", "find_space", "find_byte", "count_byte",
    "mmh3_32", "escape_key_py",
    "Run", "KeyTable", "write_run", "open_run", "read_run_header", "merge_runs_to_tsv",
    "aggregate_scan",
]
