"""Seeded mmh3 partitioning, the plain tier's run files, and the output line format.

Output lines are ``key<TAB>value<LF>``. Keys are raw bytes with exactly four two-byte escapes:
backslash ``\\\\``, tab ``\\t``, newline ``\\n``, carriage return ``\\r``. Values: ``int`` in decimal,
``float`` by ``repr``, ``bytes``/``str`` escaped like keys, ``list``/``tuple`` as their items
(each formatted this way) joined by tabs, ``None`` as an empty field, anything else as ``repr``.

A plain-tier run file holds ``(key, value)`` pairs sorted by key: the magic ``MRP1``, pickled
chunks (lists of pairs), then a pickled ``("end", count)`` trailer, so a truncated file is detected.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import mmh3

PLAIN_MAGIC = b"MRP1"
_CHUNK = 4096


def partition_of(key: bytes, seed: int, nparts: int) -> int:
    """The partition of ``key``: unsigned seeded mmh3 modulo the partition count."""
    return int(mmh3.hash(key, seed, signed=False)) % nparts


def to_key(key: object) -> bytes:
    """Normalise a key yielded by user code to bytes."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"keys must be bytes or str, got {type(key).__name__}: {key!r:.80}")


def escape(raw: bytes) -> bytes:
    """Escape backslash, tab, newline and carriage return; every other byte stays raw."""
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")
    if b"\t" in raw:
        raw = raw.replace(b"\t", b"\\t")
    if b"\n" in raw:
        raw = raw.replace(b"\n", b"\\n")
    if b"\r" in raw:
        raw = raw.replace(b"\r", b"\\r")
    return raw


def format_value(value: Any) -> bytes:
    """One output field (or tab-joined fields for a list) for ``value``."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (bytes, bytearray, str)):
        return escape(to_key(bytes(value) if isinstance(value, bytearray) else value))
    if isinstance(value, (list, tuple)):
        return b"\t".join(format_value(v) for v in value)
    if value is None:
        return b""
    return escape(repr(value).encode("utf-8", "surrogateescape"))


def format_line(key: bytes, value: Any) -> bytes:
    return escape(key) + b"\t" + format_value(value) + b"\n"


def write_plain_run(path: Path, pairs: Iterable[tuple[bytes, Any]]) -> int:
    """Write sorted pairs to a run file; return the pair count."""
    count = 0
    with open(path, "wb") as f:
        f.write(PLAIN_MAGIC)
        chunk: list[tuple[bytes, Any]] = []
        for pair in pairs:
            chunk.append(pair)
            if len(chunk) >= _CHUNK:
                pickle.dump(chunk, f, protocol=5)
                count += len(chunk)
                chunk = []
        if chunk:
            pickle.dump(chunk, f, protocol=5)
            count += len(chunk)
        pickle.dump(("end", count), f, protocol=5)
    return count


def read_plain_run(path: Path) -> Iterator[tuple[bytes, Any]]:
    """Yield the pairs of a run file; raise ValueError if it is not one or is truncated."""
    with open(path, "rb") as f:
        if f.read(len(PLAIN_MAGIC)) != PLAIN_MAGIC:
            raise ValueError(f"not a mapred run file: {path}")
        seen = 0
        while True:
            item = _load(f, path)
            if isinstance(item, tuple):
                if item != ("end", seen):
                    raise ValueError(f"run file {path} is corrupt (count mismatch)")
                return
            seen += len(item)
            yield from item


def _load(f: BinaryIO, path: Path) -> Any:
    try:
        return pickle.load(f)  # noqa: S301 - our own files, written by this module
    except (EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"run file {path} is truncated or corrupt") from e
