"""The output directory: checks before a run, the per-output lock, and the atomic commit.

Reducers write into a hidden staging directory beside ``OUT`` (same filesystem). The commit writes
``_SUCCESS`` into it and renames it to ``OUT``; with ``--overwrite`` an existing ``OUT`` is swapped
out in one ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it, then removed. A failed or
interrupted run removes its staging directory: ``OUT`` is either absent, the old one, or complete.
Without ``renameat2`` the old ``OUT`` is renamed to ``.OUT.mapred-old-RUNID`` first: a crash
between the two renames leaves ``OUT`` absent and the old output there, until the next run of the
same ``OUT`` puts it back. A run holds a flock on its staging directory; the next run removes the
staging directories nobody holds (their run was killed with SIGKILL or lost power). Missing parent
directories of ``OUT`` are made when the run stages and removed again at its end if they are still
empty: a run that fails leaves none behind.

``--overwrite`` replaces only what mapred wrote: an empty directory, or one holding ``_SUCCESS``
and nothing but part files. The commit renames only a staging directory holding exactly the part
files and ``_SUCCESS``. An output that contains something mapred needs or the user lives in (the
state directory, the job, the hosts file, the working directory, ``$HOME``) is refused, always.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from mapred import paths
from mapred.errors import JobError, LockedError, UsageError

SUCCESS = "_SUCCESS"
_RENAME_EXCHANGE = 2
log = logging.getLogger("mapred")


_OURS = re.compile(r"part-\d{5,}|\.part-\d{5,}\..+\.tmp")  # what a committed OUT may hold


def guarded_paths(state: Path, job: Path, hosts_file: Path | None) -> dict[str, Path]:
    """What an output must never contain: -o there with --overwrite would delete it."""
    guarded = {"the state directory": state, "the job": job, "the working directory": Path.cwd(),
               "$HOME": Path.home()}
    if hosts_file is not None:
        guarded["the hosts file"] = hosts_file
    return guarded


def not_ours(output: Path) -> str | None:
    """Why the existing directory ``output`` is not a mapred output (None: it is one, or empty)."""
    names = sorted(os.listdir(output))
    if not names:
        return None
    if SUCCESS not in names:
        return f"it holds no {SUCCESS}"
    for name in names:
        if name != SUCCESS and not _OURS.fullmatch(name):
            return f"it holds {name!r}, which mapred did not write"
        if not stat.S_ISREG(os.lstat(output / name).st_mode):
            return f"{name!r} in it is not a regular file"
    return None


def check_output(output: Path, corpus: Path, overwrite: bool,
                 guarded: Mapping[str, Path] | None = None) -> None:
    """Refuse an output that exists (unless overwrite, and then only mapred's own), is not a
    directory, overlaps the corpus or contains a guarded path."""
    out = output.resolve()
    src = corpus.resolve()
    if out == src or out.is_relative_to(src) or src.is_relative_to(out):
        raise UsageError(f"output {output} and corpus {corpus} overlap; choose another output")
    for what, path in (guarded or {}).items():
        if path.resolve().is_relative_to(out):
            raise UsageError(f"output {output} contains {what} ({path}); choose another output")
    if os.path.lexists(output):
        if not output.is_dir() or output.is_symlink():
            raise UsageError(f"output exists and is not a directory: {output}")
        if not overwrite:
            raise UsageError(f"output exists: {output} (use --overwrite to replace it)")
        _check_replaceable(output)
    parent = _missing_parents(output)[1]
    if not parent.is_dir():
        raise UsageError(f"output {output} cannot be made: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output's parent directory is not writable: {parent}")


def _missing_parents(path: Path) -> tuple[list[Path], Path]:
    """The ancestors of ``path`` that do not exist, innermost first, and the nearest one that
    does (as a name: it may be a file, or a dangling link)."""
    missing, parent = [], path.parent
    while not os.path.lexists(parent) and parent.parent != parent:
        missing.append(parent)
        parent = parent.parent
    return missing, parent


def make_parents(path: Path) -> list[Path]:
    """Create the missing directories above ``path`` (like ``mkdir -p``, umask applies); return
    the ones made here, outermost first, for `remove_empty` to take back if nothing is written.

    A directory that appears meanwhile is used but not counted as made here; a non-directory in
    the way, or a directory that cannot be made, is a `UsageError` (after removing what was made).
    """
    made: list[Path] = []
    for d in reversed(_missing_parents(path)[0]):
        try:
            os.mkdir(d)
        except FileExistsError:
            if d.is_dir():
                continue
            remove_empty(made)
            raise UsageError(f"cannot create directory {d}: something else is there") from None
        except OSError as e:
            remove_empty(made)
            raise UsageError(f"cannot create directory {d}: {e.strerror or e}") from e
        made.append(d)
    if made:
        log.debug("created %s for %s", ", ".join(map(str, made)), path)
    return made


def remove_empty(made: list[Path]) -> None:
    """Remove the directories `make_parents` made, innermost first, as long as they are empty:
    one holding anything (the committed output, the user's files) stays, and so do those above."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            return


class OutputLock:
    """An exclusive lock per output path (flock: a dead holder releases it automatically)."""

    def __init__(self, state: Path, output: Path) -> None:
        self.path = paths.lock_file(state, output.resolve())
        self.output = output
        self._fd: int | None = None
        self._staging_fd: int | None = None
        self._made: list[Path] = []  # OUT's missing parents, made by stage()

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(self.path, os.O_RDWR | os.O_CREAT)
        if fd is None:
            raise LockedError(f"another mapred run is writing {self.output}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._fd, self._staging_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._staging_fd = None
        remove_empty(self._made)  # a run that wrote nothing leaves no directories behind
        self._made = []

    def stage(self, run_id: str) -> Path:
        """Make this run's staging directory, flocked while the run lives, after removing what
        dead runs left beside OUT. OUT's missing parent directories are made first; the lock's
        exit removes them again unless something is in them then (the committed OUT)."""
        assert self._fd is not None, "stage() needs the lock held"
        self._made += make_parents(self.output)
        for what in self.sweep():
            log.info("%s (left by a run that was killed)", what)
        staging = paths.staging_dir(self.output, run_id)
        staging.mkdir(mode=0o755)
        self._staging_fd = _try_lock(staging)
        return staging

    def sweep(self) -> list[str]:
        """Remove the staging directories of dead runs of OUT (killed with SIGKILL, a power cut)
        and put back an old OUT that a dead commit had moved aside (``renameat2`` missing): a
        run is dead when nothing holds its staging directory's lock. Returns what it did."""
        done, parent = [], self.output.parent
        prefix = f".{self.output.name}.mapred-"
        runs = {m.group(1) for m in
                (re.fullmatch(rf"{re.escape(prefix)}(?:old-)?({paths.RUN_ID_RE})", n)
                 for n in _names(parent)) if m}
        for run_id in sorted(runs):
            staging = paths.staging_dir(self.output, run_id)
            retired = paths.retired_dir(self.output, run_id)
            if staging.is_dir() and not staging.is_symlink():
                fd = _try_lock(staging)
                if fd is None:
                    continue  # alive: a run of another state dir
                os.close(fd)
            if retired.is_dir() and not retired.is_symlink():
                if os.path.lexists(self.output):
                    shutil.rmtree(retired, ignore_errors=True)
                else:
                    os.rename(retired, self.output)
                    done.append(f"put back {self.output} from {retired.name}")
            if staging.is_dir() and not staging.is_symlink():
                shutil.rmtree(staging, ignore_errors=True)
                done.append(f"removed {staging.name}")
        return done


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _try_lock(path: Path, flags: int = os.O_RDONLY | os.O_DIRECTORY) -> int | None:
    """An fd holding an exclusive flock on path (by default a directory), or None when another
    process holds it."""
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _check_replaceable(output: Path) -> None:
    try:
        why = not_ours(output)
    except OSError as e:
        why = f"it cannot be read: {e.strerror or e}"
    if why is not None:
        raise UsageError(f"--overwrite refused: {output} is not a mapred output ({why}); "
                         "move it away yourself or choose another output")


def _check_staging(staging: Path) -> None:
    """The staging directory holds the part files and _SUCCESS, nothing else (else: no commit)."""
    for name in os.listdir(staging):
        if name != SUCCESS and not re.fullmatch(r"part-\d{5,}", name):
            raise JobError(f"staging directory {staging} holds {name!r}: not committed")


def commit(staging: Path, output: Path, run_id: str, overwrite: bool) -> None:
    """Write _SUCCESS and move the staging directory into place atomically."""
    marker = staging / SUCCESS
    marker.touch()
    _check_staging(staging)
    _fsync_dir(staging)
    if os.path.lexists(output):
        if not overwrite:  # appeared during the run (not by another mapred: that holds the lock)
            raise UsageError(f"output appeared while the job ran: {output}; result discarded")
        if not output.is_dir() or output.is_symlink():
            raise UsageError(f"output changed while the job ran: {output} is no longer a "
                             "directory; result discarded")
        _check_replaceable(output)  # again: the user may have put files there meanwhile
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
