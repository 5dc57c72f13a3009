"""Every path mapred builds, in one place.

Coordinator side: the state directory (run journals, locks) and the output staging names.
Worker side: the scratch layout under a run's scratch directory on each host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def state_dir(explicit: Path | None = None) -> Path:
    """``--state-dir``, else ``$XDG_STATE_HOME/mapred``, else ``~/.local/state/mapred``."""
    if explicit is not None:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mapred"


def run_dir(state: Path, run_id: str) -> Path:
    return state / "runs" / run_id


def lock_file(state: Path, output: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(output)).hexdigest()[:24]
    return state / "locks" / f"{digest}.lock"


def digest_hints(state: Path) -> Path:
    """Shard digests remembered between runs, to place map tasks where their shard is cached."""
    return state / "digests.json"


RUN_ID_RE = r"\d{8}T\d{6}-[0-9a-f]{6}"  # what journal.new_run_id makes


def staging_dir(output: Path, run_id: str) -> Path:
    """Where reducers' part files gather before the atomic commit (same filesystem as OUT)."""
    return output.parent / f".{output.name}.mapred-{run_id}"


def retired_dir(output: Path, run_id: str) -> Path:
    """Where an overwritten OUT goes between the swap and its removal."""
    return output.parent / f".{output.name}.mapred-old-{run_id}"


def part_name(partition: int) -> str:
    return f"part-{partition:05d}"


def reduce_tmp_name(partition: int, attempt: str) -> str:
    return f".{part_name(partition)}.{attempt}.tmp"


def map_root(scratch: Path) -> Path:
    """Every map output of a run on a host (what its shuffle daemon serves)."""
    return scratch / "map"


def map_attempt_dir(scratch: Path, attempt: str) -> Path:
    return map_root(scratch) / attempt


def reduce_work_dir(scratch: Path, attempt: str) -> Path:
    """A reduce attempt's temporary files (fetched inputs, merge passes)."""
    return scratch / "reduce" / attempt


# --- a host's workdir ---------------------------------------------------------------------

def host_runs(workdir: Path) -> Path:
    return workdir / "runs"


def host_scratch(workdir: Path, token: str) -> Path:
    """One run's private scratch on a host."""
    return host_runs(workdir) / token


def host_cache(workdir: Path) -> Path:
    """Shards by content hash, reused by later runs."""
    return workdir / "cache"


def host_jobs(workdir: Path) -> Path:
    """Shipped job directories, by digest."""
    return workdir / "jobs"


def map_run_file(attempt_dir: Path, partition: int, seq: int) -> Path:
    return attempt_dir / f"p{partition:05d}-{seq:04d}.run"


def numba_cache_dir(version: str) -> Path:
    """Compiled kernels are cached per host, per mapred and Python version."""
    import sys

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(base) / "mapred" / f"numba-{version}-{py}"


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it exists; never follows a symlinked directory."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass
