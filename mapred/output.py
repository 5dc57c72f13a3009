"""The output directory: checks before a run, the per-output lock, and the atomic commit.

Reducers write into a hidden staging directory beside ``OUT`` (same filesystem). The commit writes
``_SUCCESS`` into it and renames it to ``OUT``; with ``--overwrite`` an existing ``OUT`` is swapped
out in one ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it, then removed. A failed or
interrupted run removes its staging directory: ``OUT`` is either absent, the old one, or complete.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
from pathlib import Path

from mapred import paths
from mapred.errors import LockedError, UsageError

SUCCESS = "_SUCCESS"
_RENAME_EXCHANGE = 2


def check_output(output: Path, corpus: Path, overwrite: bool) -> None:
    """Refuse an output that exists (unless overwrite), is not a directory, or overlaps the corpus."""
    out = output.resolve()
    src = corpus.resolve()
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise UsageError(f"output {output} and corpus {corpus} overlap; choose another output")
    if os.path.lexists(output):
        if not output.is_dir() or output.is_symlink():
            raise UsageError(f"output exists and is not a directory: {output}")
        if not overwrite:
            raise UsageError(f"output exists: {output} (use --overwrite to replace it)")
    if not output.parent.is_dir():
        raise UsageError(f"output's parent directory does not exist: {output.parent}")
    if not os.access(output.parent, os.W_OK):
        raise UsageError(f"output's parent directory is not writable: {output.parent}")


class OutputLock:
    """An exclusive lock per output path (flock: a dead holder releases it automatically)."""

    def __init__(self, state: Path, output: Path) -> None:
        self.path = paths.lock_file(state, output.resolve())
        self.output = output
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(f"another mapred run is writing {self.output}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_staging(output: Path, run_id: str) -> Path:
    staging = paths.staging_dir(output, run_id)
    staging.mkdir(mode=0o755)
    return staging


def commit(staging: Path, output: Path, run_id: str, overwrite: bool) -> None:
    """Write _SUCCESS and move the staging directory into place atomically."""
    marker = staging / SUCCESS
    marker.touch()
    _fsync_dir(staging)
    if os.path.lexists(output):
        if not overwrite:  # appeared during the run (not by another mapred: that holds the lock)
            raise UsageError(f"output appeared while the job ran: {output}; result discarded")
        retired = paths.retired_dir(output, run_id)
        if _exchange(staging, output):
            shutil.rmtree(staging)  # staging now holds the old output
        else:
            os.rename(output, retired)
            os.rename(staging, output)
            shutil.rmtree(retired)
    else:
        os.rename(staging, output)
    _fsync_dir(output.parent)


def abandon(staging: Path | None) -> None:
    if staging is not None and staging.exists():
        shutil.rmtree(staging, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2; False when the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
