"""The output lock's sweep of what dead runs left beside OUT (pure filesystem, no run)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mapred import output, paths

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
