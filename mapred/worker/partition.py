"""Seeded mmh3 partitioning, the plain tier's run files, and the output line format.

Output lines are ``key<TAB>value<LF>``. Keys are raw bytes with exactly four two-byte escapes:
backslash ``\\\\``, tab ``\\t``, newline ``\\n``, carriage return ``\\r``. Values: ``int`` in decimal,
``float`` by ``repr``, ``bytes``/``str`` escaped like keys, ``list``/``tuple`` as their items
(each formatted this way) joined by tabs, ``None`` as an empty field, anything else as ``repr``.

A plain-tier run file holds ``(key, value)`` pairs sorted by key: the magic ``MRP1``, pickled
chunks (lists of pairs), then a pickled ``("end", count)`` trailer, so a truncated file is detected.
Run files travel between hosts, so they are pickles that cannot carry code: the writer refuses any
value that is not plain data (:data:`DATA_TYPES`: None, bool, int, float, complex, str, bytes,
bytearray, tuple, list, dict, set, frozenset, Decimal, Fraction and the datetime types) and the
reader resolves no global but those few constructors, so a file written by a hostile host can at
worst hold wrong data, never run anything where it is read.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import mmh3

PLAIN_MAGIC = b"MRP1"
_CHUNK = 4096

# Plain data a value may be built of. Pickle writes the first row with opcodes of its own; the
# others by calling their class, the only globals a run file may name (_SAFE_GLOBALS).
DATA_TYPES: tuple[type, ...] = (
    type(None), bool, int, float, str, bytes, bytearray, tuple, list, dict, set, frozenset,
    complex, decimal.Decimal, fractions.Fraction,
    datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone,
)
_SAFE_GLOBALS = {(t.__module__, t.__qualname__): t for t in (
    bytearray, set, frozenset, complex, decimal.Decimal, fractions.Fraction, datetime.date,
    datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone)}
_SAFE_CLASSES = frozenset(_SAFE_GLOBALS.values())  # pickled by name, as a value's constructor


class _DataPickler(pickle.Pickler):
    """Pickles plain data only: anything else is refused where it is written (the map task)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) not in DATA_TYPES and not (isinstance(obj, type) and obj in _SAFE_CLASSES):
            raise TypeError(
                f"a value of type {type(obj).__module__}.{type(obj).__qualname__} cannot be "
                f"passed between tasks ({obj!r:.60}): plain-tier values must be built of None, "
                "bool, int, float, complex, str, bytes, tuple, list, dict, set, Decimal, "
                "Fraction or datetime values (convert it, e.g. int(x) or str(x))")
        return NotImplemented


class _DataUnpickler(pickle.Unpickler):
    """Resolves only the constructors of DATA_TYPES: a run file cannot name any other code."""

    def find_class(self, module: str, name: str) -> Any:
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a run file may not")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds a persistent id, which a run file may not")


def _dump(obj: Any, f: BinaryIO) -> None:
    _DataPickler(f, protocol=5).dump(obj)


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
                _dump(chunk, f)
                count += len(chunk)
                chunk = []
        if chunk:
            _dump(chunk, f)
            count += len(chunk)
        _dump(("end", count), f)
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
        return _DataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"run file {path} is refused: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            decimal.InvalidOperation) as e:
        raise ValueError(f"run file {path} is truncated or corrupt") from e
