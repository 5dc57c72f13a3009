"""mapred.worker.workdir: a workdir another user could change is refused, naming the path and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mapred.worker.workdir import problem

SUBDIRS = ("runs", "cache", "jobs", "keep")


def test_a_private_workdir_or_one_to_create_is_fine(tmp_path: Path) -> None:
    assert problem(str(tmp_path / "new" / "wd"), SUBDIRS) is None
    wd = tmp_path / "wd"
    for d in SUBDIRS:
        (wd / d).mkdir(parents=True, mode=0o700)
    assert problem(str(wd), SUBDIRS) is None


@pytest.mark.parametrize("where", ["workdir", "jobs"])
@pytest.mark.parametrize("mode, who", [(0o770, "group"), (0o707, "others")])
def test_a_group_or_world_writable_directory_is_refused(tmp_path: Path, where: str, mode: int,
                                                        who: str) -> None:
    wd = tmp_path / "wd"
    (wd / "jobs").mkdir(parents=True, mode=0o700)
    target = wd if where == "workdir" else wd / "jobs"
    target.chmod(mode)
    why = problem(str(wd), SUBDIRS)
    assert why is not None and why.startswith(f"{target} is writable by {who}"), why


def test_symlinks_and_files_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    assert problem(str(tmp_path / "link"), SUBDIRS) == f"{tmp_path / 'link'} is a symbolic link; " \
        "use the real path"
    (real / "jobs").symlink_to(tmp_path)
    assert "jobs is a symbolic link" in (problem(str(real), SUBDIRS) or "")
    (tmp_path / "file").write_text("")
    assert problem(str(tmp_path / "file"), SUBDIRS) == f"{tmp_path / 'file'} is not a directory"


def test_a_directory_above_writable_by_others_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    why = problem(str(shared / "wd"), SUBDIRS)
    assert why is not None and why.startswith(f"{shared} (above the workdir) is writable by "
                                              "others and not sticky"), why
    shared.chmod(0o1777)  # like /tmp: others cannot rename or remove what is ours
    assert problem(str(shared / "wd"), SUBDIRS) is None


def test_a_workdir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")  # make test runs as root
    os.chown(wd, 65534, 65534)
    why = problem(str(wd), SUBDIRS)
    assert why is not None and why.startswith(f"{wd} belongs to "), why


def test_a_workdir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root may write anywhere but in a read-only or virtual place
        assert problem("/proc/1/mapred", SUBDIRS) == \
            "/proc/1, where /proc/1/mapred would be created, is not writable"
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert problem(str(locked / "wd"), SUBDIRS) == \
        f"{locked}, where {locked / 'wd'} would be created, is not writable"
