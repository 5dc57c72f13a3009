"""Sharding: every record lands in exactly one shard, for every shard size and cut position."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapred.errors import UsageError
from mapred.shards import align, cut_file, list_inputs, plan


def records(data: bytes) -> list[bytes]:
    """Reference: lines with their newline; a last line without one is still a record."""
    return data.splitlines(keepends=True) if b"\r" not in data else _split_lf(data)


def _split_lf(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        j = data.find(b"\n", pos)
        stop = len(data) if j < 0 else j + 1
        out.append(data[pos:stop])
        pos = stop
    return out


def record_starts(data: bytes) -> set[int]:
    return {0} | {i + 1 for i, b in enumerate(data) if b == 0x0A and i + 1 < len(data)}


text = st.lists(
    st.sampled_from([b"a", b"bc", b" ", b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"word "]),
    max_size=60,
).map(b"".join)


@given(data=text, shard_size=st.integers(1, 80))
@settings(max_examples=400, deadline=None)
def test_cut_file_tiles_the_file_with_whole_records(data, shard_size):
    ranges = cut_file(io.BytesIO(data), len(data), shard_size)
    # tiles [0, len) without gaps or overlap
    assert [a for a, _ in ranges] == ([0] if data else []) + [b for _, b in ranges[:-1]]
    assert (ranges[-1][1] if ranges else 0) == len(data)
    starts = record_starts(data)
    got = []
    for a, b in ranges:
        assert a in starts and b > a
        got += _split_lf(data[a:b])
    assert got == _split_lf(data)


@given(data=text)
@settings(max_examples=200, deadline=None)
def test_align_at_every_position(data):
    starts = sorted(record_starts(data) | {len(data)})
    for pos in range(len(data) + 2):
        want = next((s for s in starts if s >= pos), len(data))
        assert align(io.BytesIO(data), pos, len(data)) == min(want, len(data))


def test_line_longer_than_many_shards():
    data = b"x" * 1000 + b"\nshort\n" + b"y" * 500
    ranges = cut_file(io.BytesIO(data), len(data), 100)
    assert ranges == [(0, 1001), (1001, 1507)]  # no record starts in 1008..1507


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_list_inputs_skips_hidden_and_sorts(tmp_path):
    write(tmp_path, {"b.txt": b"b", "a/z.txt": b"z", ".h/x": b"x", "a/.y": b"y",
                     "-dash": b"d", "sp ace": b""})
    names = [f.rel for f in list_inputs(tmp_path)]
    assert names == ["-dash", "a/z.txt", "b.txt", "sp ace"]


def test_symlink_outside_the_corpus_is_refused(tmp_path):
    corpus = tmp_path / "c"
    write(corpus, {"in.txt": b"in"})
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", corpus / "link")
    with pytest.raises(UsageError, match="symlink points outside the corpus: .*link"):
        list_inputs(corpus)


def test_symlink_inside_the_corpus_is_followed(tmp_path):
    write(tmp_path, {"d/in.txt": b"in"})
    os.symlink(tmp_path / "d" / "in.txt", tmp_path / "alias.txt")
    assert [f.rel for f in list_inputs(tmp_path)] == ["alias.txt", "d/in.txt"]


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(UsageError, match="corpus not found"):
        list_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no input files"):
        list_inputs(tmp_path / "empty")


def test_plan_packs_small_files_and_cuts_large_ones(tmp_path):
    import gzip

    write(tmp_path, {"a": b"1\n" * 10, "b": b"2\n" * 10, "big": b"line\n" * 100,
                     "empty": b"", "c": b"3\n" * 4})
    (tmp_path / "z.gz").write_bytes(gzip.compress(b"zipped\n" * 1000))
    shards = plan(list_inputs(tmp_path), 45)
    layout = [[(p.file.rel, p.start, p.end) for p in s.pieces] for s in shards]
    assert [("a", 0, 20), ("b", 0, 20)] in layout  # packed together, up to the shard size
    assert [("c", 0, 8)] in layout  # would overflow the pack: starts a new one
    big = [p[0] for p in layout if p[0][0] == "big"]
    assert all(len(p) == 1 for p in layout if p[0][0] == "big")
    assert [(a, b) for _, a, b in big] == [(i, min(i + 45, 500)) for i in range(0, 500, 45)]
    gz = [s for s in shards if s.pieces[0].file.rel == "z.gz"]
    assert len(gz) == 1 and gz[0].pieces[0].file.gzip and len(gz[0].pieces) == 1
    assert all(p[1] < p[2] for s in layout for p in s)  # the empty file is no piece
    assert [s.task for s in shards] == [f"m{i:05d}" for i in range(len(shards))]
