"""Output format, key normalisation, partitioning and plain-tier run files."""

from __future__ import annotations

import os

import mmh3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mrtest import escape as reference_escape
from mrtest import unescape

from mapred.worker.partition import (
    PLAIN_MAGIC,
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


def test_run_files_carry_every_plain_data_type(tmp_path):
    import datetime
    import decimal
    import fractions

    values = [None, True, 7, 1.5, "s", b"b", bytearray(b"x"), (1, "a"), [1, [2]], {1: (2,)},
              {1}, frozenset({2}), 1j, decimal.Decimal("1.5"), fractions.Fraction(1, 3),
              datetime.date(2020, 1, 1), datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
              datetime.timedelta(3), datetime.time(1, 2), [(1j, {decimal.Decimal(2)})]]
    pairs = [(b"k%03d" % i, v) for i, v in enumerate(values)]
    write_plain_run(tmp_path / "r", pairs)
    assert list(read_plain_run(tmp_path / "r")) == pairs


def test_a_run_file_cannot_run_code_where_it_is_read(tmp_path):
    """A hostile host's run file names a function to call: refused, nothing runs."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(tmp_path / "r", "wb") as f:
        f.write(PLAIN_MAGIC)
        pickle.dump([(b"k", Evil())], f)
        pickle.dump(("end", 1), f)
    with pytest.raises(ValueError, match="is refused: it names posix.mkdir"):
        list(read_plain_run(tmp_path / "r"))
    assert not marker.exists()


def test_a_value_that_is_not_plain_data_is_refused_where_it_is_written(tmp_path):
    class Point:
        pass

    with pytest.raises(TypeError, match="a value of type .*Point cannot be passed between tasks"):
        write_plain_run(tmp_path / "r", [(b"k", [1, Point()])])
