"""Sharding: every record lands in exactly one shard, for every shard size and cut position."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest
import sysdeps
from hypothesis import given, settings
from hypothesis import strategies as st
from mrtest import FORTUNES

from mapred.cluster.ssh.shards import shard_digest, stage_shard
from mapred.engine import resume
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


def rels(corpus: Path, **kw) -> list[str]:
    return [f.rel for f in list_inputs(corpus, **kw)]


def test_symlink_outside_the_corpus_is_refused_naming_link_target_and_option(tmp_path):
    corpus = tmp_path / "c"
    write(corpus, {"in.txt": b"in"})
    write(tmp_path, {"secret": b"s", "elsewhere/x": b"x"})
    os.symlink(tmp_path / "secret", corpus / "link")
    os.symlink("../elsewhere", corpus / "linked-dir")
    with pytest.raises(UsageError) as e:
        list_inputs(corpus)
    assert str(e.value) == (f"symlink points outside the corpus: {corpus / 'link'} -> "
                            f"{tmp_path / 'secret'} (and 1 more); --follow-symlinks reads what "
                            "such links point to")


def test_a_link_to_a_file_read_directly_is_skipped_the_real_path_wins(tmp_path, caplog):
    write(tmp_path, {"d/in.txt": b"in\n", "z.txt": b"z\n"})
    os.symlink(tmp_path / "d" / "in.txt", tmp_path / "alias.txt")  # sorts before d/in.txt
    os.symlink("in.txt", tmp_path / "d" / "in.u8")  # relative, as Debian's fortunes ship
    with caplog.at_level(logging.DEBUG, logger="mapred"):
        files = list_inputs(tmp_path)
    assert [(f.rel, f.via_link) for f in files] == [("d/in.txt", False), ("z.txt", False)]
    msgs = [r.getMessage() for r in caplog.records]
    assert "corpus: alias.txt skipped: same file as d/in.txt" in msgs
    assert "corpus: d/in.u8 skipped: same file as d/in.txt" in msgs
    assert ("corpus: skipped 2 symlinks or hard links to files or folders already read (each "
            "file is read once; -v names them)") in msgs


def test_a_link_to_a_folder_inside_is_not_walked_again(tmp_path, caplog):
    write(tmp_path, {"real/a": b"a\n", "real/sub/b": b"b\n"})
    os.symlink("real", tmp_path / "again")
    os.symlink("../real/sub", tmp_path / "real" / "sub-again")
    with caplog.at_level(logging.DEBUG, logger="mapred"):
        assert rels(tmp_path) == ["real/a", "real/sub/b"]
    assert any("again -> " in r.getMessage() and "already read" in r.getMessage()
               for r in caplog.records)


def test_a_link_inside_to_what_the_walk_skips_is_read_under_the_links_name(tmp_path):
    write(tmp_path, {".hidden/notes": b"n\n", "a": b"a\n"})
    os.symlink(".hidden/notes", tmp_path / "notes")
    files = list_inputs(tmp_path)
    assert [(f.rel, f.path, f.via_link) for f in files] == [
        ("a", tmp_path / "a", False), ("notes", tmp_path / ".hidden" / "notes", True)]


def test_follow_symlinks_reads_outside_targets_once_by_their_real_path(tmp_path):
    corpus, ext = tmp_path / "c", tmp_path / "ext"
    write(corpus, {"own": b"own\n"})
    write(ext, {"f": b"f\n", "d/g": b"g\n"})
    os.symlink(ext / "f", corpus / "a-file")
    os.symlink(ext, corpus / "b-dir")  # holds f again: the first name in walk order wins
    os.symlink(ext / "d", corpus / "c-sub")  # walked already under b-dir/d
    os.symlink(corpus, ext / "back")  # into the corpus again: a cycle, not walked
    os.symlink(".", ext / "d" / "self")
    files = list_inputs(corpus, follow_symlinks=True)
    assert [(f.rel, f.path, f.via_link) for f in files] == [
        ("a-file", ext / "f", True), ("b-dir/d/g", ext / "d" / "g", True), ("own", corpus / "own",
                                                                          False)]
    assert all(not os.path.islink(f.path) and os.path.realpath(f.path) == str(f.path)
               for f in files)


def test_a_followed_link_outside_never_claims_a_file_read_directly(tmp_path):
    corpus = tmp_path / "c"
    write(corpus, {"z/real.txt": b"r\n"})
    os.symlink(tmp_path, corpus / "a-up")  # outside: tmp_path, which holds the corpus itself
    write(tmp_path, {"other.txt": b"o\n"})
    assert rels(corpus, follow_symlinks=True) == ["a-up/other.txt", "z/real.txt"]


def test_dangling_links_and_link_loops_are_skipped_with_a_warning(tmp_path, caplog):
    write(tmp_path, {"a": b"a\n"})
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    os.symlink("a/below-a-file", tmp_path / "not-a-dir")
    os.symlink("loop", tmp_path / "loop")
    with caplog.at_level(logging.WARNING, logger="mapred"):
        assert rels(tmp_path) == ["a"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"skipped dangling symlink {tmp_path / 'dangling'} -> {tmp_path / 'gone'}: its target "
        "does not exist",
        f"skipped dangling symlink {tmp_path / 'not-a-dir'} -> {tmp_path / 'a' / 'below-a-file'}"
        ": its target does not exist",
        f"skipped symlink {tmp_path / 'loop'}: it leads to a loop of symlinks"]


def test_a_directory_cycle_ends(tmp_path):
    write(tmp_path, {"d/e/f": b"f\n"})
    os.symlink("../..", tmp_path / "d" / "e" / "up")
    os.symlink(tmp_path / "d", tmp_path / "d" / "e" / "d-again")
    assert rels(tmp_path) == ["d/e/f"]
    assert rels(tmp_path / "d" / "e", follow_symlinks=True) == ["f"]  # up: all walked already


def test_hard_links_are_one_file_first_name_in_walk_order(tmp_path):
    write(tmp_path, {"b/x": b"x\n", "c": b"c\n"})
    os.link(tmp_path / "b" / "x", tmp_path / "a")
    os.link(tmp_path / "b" / "x", tmp_path / "b" / "y")
    assert rels(tmp_path) == ["a", "c"]


def test_an_output_a_followed_link_leads_into_is_refused(tmp_path):
    corpus, ext = tmp_path / "c", tmp_path / "ext"
    write(corpus, {"own": b"own\n"})
    write(ext, {"out/part-00000": b"a\t1\n", "out/_SUCCESS": b""})
    os.symlink(ext, corpus / "ext")
    with pytest.raises(UsageError, match=r"corpus file ext/out/_SUCCESS \(reached through a "
                       r"symlink\) is in the output .*/ext/out; choose another output"):
        list_inputs(corpus, follow_symlinks=True, output=ext / "out")
    assert rels(corpus, follow_symlinks=True, output=tmp_path / "o") == [
        "ext/out/_SUCCESS", "ext/out/part-00000", "own"]


def test_a_corpus_that_is_a_link_is_its_target(tmp_path):
    write(tmp_path, {"real/a": b"a\n", "f.txt": b"f\n"})
    os.symlink("real", tmp_path / "corpus")
    os.symlink("f.txt", tmp_path / "one")
    assert [(f.rel, f.via_link) for f in list_inputs(tmp_path / "corpus")] == [("a", False)]
    [one] = list_inputs(tmp_path / "one")
    assert (one.rel, one.path, one.via_link) == ("one", tmp_path / "f.txt", True)


def test_fortunes_as_debian_ships_them_each_file_once():
    fortunes = Path(sysdeps.need(str(FORTUNES / "fortunes"))).parent
    links = [p for p in fortunes.iterdir() if p.is_symlink()]
    assert links, "fortunes-min ships fortunes.u8 -> fortunes"
    regular = sorted(p.name for p in fortunes.iterdir()
                     if p.is_file() and not p.is_symlink() and not p.name.startswith("."))
    assert rels(fortunes) == regular


def test_a_shard_reached_through_a_link_stages_and_keys_its_real_file(tmp_path):
    corpus, ext = tmp_path / "c", tmp_path / "ext"
    write(corpus, {"own": b"own\n"})
    write(ext, {"one": b"same size\n", "two": b"SAME SIZE\n"})
    os.utime(ext / "two", ns=(os.stat(ext / "one").st_atime_ns, os.stat(ext / "one").st_mtime_ns))
    os.symlink(ext / "one", corpus / "link")
    shards = plan(list_inputs(corpus, follow_symlinks=True), 1)
    linked = next(s for s in shards if s.pieces[0].file.rel == "link")
    path, temporary = stage_shard(linked, tmp_path, shard_digest(linked))
    assert (path, temporary) == (str(ext / "one"), False)  # rsync skips a symlink: never one
    key = resume.shard_key(linked)
    os.unlink(corpus / "link")
    os.symlink(ext / "two", corpus / "link")  # same name, size and mtime; other bytes
    again = next(s for s in plan(list_inputs(corpus, follow_symlinks=True), 1)
                 if s.pieces[0].file.rel == "link")
    assert resume.shard_key(again) != key
    own = [s for s in shards if s.pieces[0].file.rel == "own"]
    assert json.loads(resume.shard_key(own[0]))[0] == ["own", 0, 4, 4,
                                                      own[0].pieces[0].file.mtime_ns, False]


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
