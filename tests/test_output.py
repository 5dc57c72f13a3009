"""The output lock's sweep of what dead runs left beside OUT, and OUT's missing parents (pure
filesystem, no run)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from mapred import paths
from mapred.engine import output
from mapred.errors import UsageError

DEAD, ALIVE, CUT = "20261203T010203-aaaaaa", "20261203T010204-bbbbbb", "20261203T010205-cccccc"


def _part(directory: Path, text: str) -> None:
    directory.mkdir()
    (directory / "part-00000").write_text(text)
    (directory / "_SUCCESS").touch()


def test_the_sweep_removes_dead_runs_staging_keeps_live_ones_and_puts_back_an_old_out(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    _part(paths.staging_dir(out, DEAD), "half\n")  # killed mid-run
    _part(paths.staging_dir(out, CUT), "new\n")  # killed between the fallback's two renames
    _part(paths.retired_dir(out, CUT), "old\n")
    live = paths.staging_dir(out, ALIVE)  # a run of another state dir, running now
    _part(live, "running\n")
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    (tmp_path / ".other.mapred-20261203T010203-aaaaaa").mkdir()  # another OUT's: not ours
    (tmp_path / ".out.mapred-notarun").mkdir()  # not a run id: left alone
    try:
        with output.OutputLock(tmp_path / "state", out) as lock:
            done = lock.sweep()
    finally:
        os.close(held)
    assert (out / "part-00000").read_text() == "old\n", done  # the old output is back
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "state") == [
        ".other.mapred-20261203T010203-aaaaaa", live.name, ".out.mapred-notarun", "out"]
    assert len(done) == 3, done


def test_a_retired_out_is_dropped_when_out_exists(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _part(out, "new\n")  # the dead commit got as far as its second rename
    _part(paths.retired_dir(out, DEAD), "old\n")
    with output.OutputLock(tmp_path / "state", out) as lock:
        lock.sweep()
        staging = lock.stage(ALIVE)
        assert staging.is_dir()
        assert output._try_lock(staging) is None  # held while the run lives
    assert sorted(p.name for p in tmp_path.iterdir()) == [staging.name, "out", "state"]
    assert (out / "part-00000").read_text() == "new\n"


def test_missing_parents_of_out_are_made_at_staging_and_taken_back_if_nothing_was_written(
        tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "out"
    output.check_output(out, tmp_path / "corpus", overwrite=False)  # no longer refused
    with output.OutputLock(tmp_path / "state", out) as lock:
        assert not (tmp_path / "kept" / "new").exists()  # nothing made before staging
        staging = lock.stage(DEAD)
        assert staging.parent == out.parent and out.parent.is_dir()
        output.abandon(staging)  # the run failed
    assert list((tmp_path / "kept").iterdir()) == []  # the existing parent stays, empty


def test_parents_holding_the_committed_out_stay(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with output.OutputLock(tmp_path / "state", out) as lock:
        staging = lock.stage(DEAD)
        (staging / "part-00000").write_text("x\n")
        output.commit(staging, out, DEAD, overwrite=False)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000"]


def test_a_parent_made_for_out_that_gets_other_files_stays(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with output.OutputLock(tmp_path / "state", out) as lock:
        output.abandon(lock.stage(DEAD))
        (tmp_path / "a" / "mine.txt").write_text("the user's\n")
    assert sorted(os.listdir(tmp_path / "a")) == ["mine.txt"]  # b was empty: removed


def test_out_below_a_file_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"cannot be made: .*/file is not a directory"):
        output.check_output(tmp_path / "file" / "x" / "out", tmp_path / "corpus", False)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b").write_text("")  # appears where make_parents wants a directory
    with pytest.raises(UsageError, match="cannot create directory"):
        output.make_parents(tmp_path / "dir" / "b" / "c" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]
    made = output.make_parents(tmp_path / "n1" / "n2" / "out")
    assert made == [tmp_path / "n1", tmp_path / "n1" / "n2"]
    assert output.make_parents(tmp_path / "n1" / "n2" / "out") == []  # there now: not ours
    output.remove_empty(made)
    assert not (tmp_path / "n1").exists()
