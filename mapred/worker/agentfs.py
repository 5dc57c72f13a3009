"""The host agent's files and processes (worker side, standard library only).

A run's directory on a host (``WORKDIR/runs/TOKEN``) and its lock, the sweeps of what earlier runs
left (run dirs, kept map outputs, stale cache entries, damaged job dirs), the hard links that keep
committed map outputs for ``--resume``, what the host reports at start, and the processes of a
run: each carries ``MAPRED_TOKEN`` in its environment and is killed by it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

from mapred import paths
from mapred.limits import CACHE_MAX_AGE, KEEP_MAX_AGE, STALE_RUN_AGE, STALE_TEMP_AGE

TOKEN_ENV = "MAPRED_TOKEN"  # noqa: S105 - no secret: tags every process of a run on a host
LOCK_FILE = ".agent.lock"  # in a run dir: flocked by its live agent
KEPT = ".kept"  # under the scratch dir: hard links of committed map outputs
RUN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- run dirs ---------------------------------------------------------------------------------


def sweep_runs(runs: Path) -> None:
    """Remove run dirs of earlier runs whose agent is gone (a crash, a power cut)."""
    now = time.time()
    for d in runs.iterdir():
        try:
            fd = os.open(d / LOCK_FILE, os.O_RDWR)
        except OSError:  # a run dir has its lock from the start and loses it last
            starting = d.name.startswith(".")  # (unless it is being made, see make_locked)
            if not starting or now - d.lstat().st_mtime > STALE_RUN_AGE:
                paths.remove(d)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run holds it
        finally:
            os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


def make_locked(scratch: Path, tmp_name: str, subdirs: tuple[str, ...]) -> int:
    """The run dir appears (a rename) only once its lock is held: a sweep by another agent
    never sees it without a lock, whenever this one is killed. Returns the lock's fd."""
    tmp = scratch.with_name(tmp_name)
    tmp.mkdir(mode=0o700)
    fd = os.open(tmp / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    for sub in subdirs:
        (tmp / sub).mkdir(mode=0o700)
    os.rename(tmp, scratch)
    return fd


def remove_locked(scratch: Path) -> None:
    """Remove a run dir, its lock last: killed halfway, what is left still has a free lock, and
    the next agent's sweep removes it at once."""
    if not scratch.is_dir():
        return
    for entry in scratch.iterdir():
        if entry.name != LOCK_FILE:
            paths.remove(entry)
    paths.remove(scratch / LOCK_FILE)
    shutil.rmtree(scratch, ignore_errors=True)


# --- kept map outputs (--resume) --------------------------------------------------------------


def sweep_kept(kept: Path) -> list[str]:
    """Run ids with kept map outputs; those older than KEEP_MAX_AGE are removed first."""
    now, out = time.time(), []
    for d in kept.iterdir():
        try:
            age = now - d.stat().st_mtime
        except OSError:
            continue
        if age > KEEP_MAX_AGE or not RUN_RE.fullmatch(d.name):
            paths.remove(d)
        else:
            out.append(d.name)
    return sorted(out)


def check_run_id(run: str) -> str:
    if not RUN_RE.fullmatch(run):
        raise ValueError(f"bad run id {run!r}")
    return run


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` to the same place under ``dst``."""
    for dirpath, _, names in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in names:
            try:
                os.link(Path(dirpath) / n, target / n)
            except FileExistsError:
                pass


def adopt(src: Path, dst: Path) -> dict[str, int]:
    """Move the kept ``src`` dir to ``dst``: {path relative to it: size} (none if not kept)."""
    files: dict[str, int] = {}
    if src.is_dir():
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rename(src, dst)
        for dirpath, _, names in os.walk(dst):
            for n in names:
                p = Path(dirpath) / n
                files[str(p.relative_to(dst))] = p.stat().st_size
    return files


# --- what the host has ------------------------------------------------------------------------


def cache_listing(cache: Path) -> list[str]:
    """Names of cached shards; evicts stale ones and abandoned temporary files first."""
    now = time.time()
    names = []
    for entry in os.scandir(cache):
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        stale = STALE_TEMP_AGE if entry.name.startswith(".") else CACHE_MAX_AGE
        if age > stale:
            paths.remove(Path(entry.path))
        elif not entry.name.startswith("."):
            names.append(entry.name)
    return sorted(names)


def job_listing(directory: Path) -> list[str]:
    """``DIGEST/MAIN`` of every job directory that is whole (``jobfiles.verify``: its manifest
    hashes to its name, its files to the manifest); one that is not (changed on this host, or
    half shipped) is removed, so the coordinator ships it again. Directories of single job
    modules named by their own hash (mapred before jobs had modules) are checked the old way."""
    out = []
    for d in directory.iterdir():
        if d.is_dir() and not d.is_symlink() and not d.name.startswith("."):
            out += _job_dir(d)
    return out


def _job_dir(d: Path) -> list[str]:
    from mapred import jobfiles

    if (d / jobfiles.MANIFEST).exists():
        if jobfiles.verify(d):
            return [f"{d.name}/{json.loads((d / jobfiles.MANIFEST).read_bytes())['main']}"]
        paths.remove(d)
        return []
    if time.time() - d.stat().st_mtime < 600:
        return []  # maybe being shipped now by another run: its manifest comes last
    out = []
    for f in d.iterdir():
        if f.name.startswith("."):
            continue
        if f.is_file() and not f.is_symlink() and \
                hashlib.sha256(f.read_bytes()).hexdigest() == d.name:
            out.append(f"{d.name}/{f.name}")
        else:
            paths.remove(f)
    return out


def server_address() -> str:
    """This host's address on the coordinator's SSH connection (what the LAN reaches it by)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return parts[2] if len(parts) == 4 else "127.0.0.1"


def mapred_version() -> str | None:
    try:
        from mapred import __version__
    except ImportError:
        return None
    return __version__


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


# --- the run's processes ----------------------------------------------------------------------


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def tagged(pid: int, token: str) -> bool:
    needle = f"{TOKEN_ENV}={token}".encode()
    return needle in _environ(pid).split(b"\0")


def tagged_pids(token: str) -> list[int]:
    me = os.getpid()
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    return [p for p in pids if p != me and tagged(p, token)]


def kill_group(pid: int) -> None:
    """SIGKILL pid's process group (each worker is its own session), or pid alone."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return
    try:
        if pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def kill_run(token: str, seconds: float = 5) -> None:
    """Kill every process tagged with ``token``, until none is left or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while True:
        pids = tagged_pids(token)
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            kill_group(pid)
        time.sleep(0.02)
