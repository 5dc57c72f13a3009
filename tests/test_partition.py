"""Output format, key normalisation, partitioning and plain-tier run files."""

from __future__ import annotations

import mmh3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mrtest import escape as reference_escape
from mrtest import unescape

from mapred.partition import (
    escape,
    format_line,
    format_value,
    partition_of,
    read_plain_run,
    to_key,
    write_plain_run,
)


@given(st.binary(max_size=200))
def test_escape_matches_reference_and_round_trips(raw):
    assert escape(raw) == reference_escape(raw)
    assert unescape(escape(raw)) == raw
    assert b"\t" not in escape(raw) and b"\n" not in escape(raw)


def test_values():
    assert format_value(42) == b"42"
    assert format_value(-3) == b"-3"
    assert format_value(True) == b"true"
    assert format_value(0.5) == b"0.5"
    assert format_value("tab\there") == b"tab\\there"
    assert format_value([b"a", 1, "b\nc"]) == b"a\t1\tb\\nc"
    assert format_value(None) == b""
    assert format_line(b"k\\", 1) == b"k\\\\\t1\n"


def test_keys():
    assert to_key("é") == "é".encode()
    assert to_key(b"\xff") == b"\xff"
    assert to_key("\udcff") == b"\xff"  # surrogateescape round trip of invalid UTF-8
    with pytest.raises(TypeError, match="keys must be bytes or str, got int"):
        to_key(3)


@given(st.binary(max_size=64), st.integers(0, 2**32 - 1), st.integers(1, 64))
def test_partition_is_seeded_unsigned_mmh3(key, seed, n):
    assert partition_of(key, seed, n) == mmh3.hash(key, seed, signed=False) % n


def test_run_file_round_trip_and_truncation(tmp_path):
    pairs = [(b"k%06d" % i, {"v": i}) for i in range(10_000)]
    path = tmp_path / "r.run"
    assert write_plain_run(path, pairs) == len(pairs)
    assert list(read_plain_run(path)) == pairs
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 4, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="r.run"):
            list(read_plain_run(path))
