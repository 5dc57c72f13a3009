"""A shard's bytes on the laptop: its content hash, whether its files changed, a local staged copy.

SSH hosts cache shards by the sha256 of their bytes (``WORKDIR/cache/<digest>``), so the digest is
computed once per process and memoised by (path, size, mtime, range); a shard of several pieces is
staged as one concatenated file, copied with ``copy_file_range``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from mapred.errors import JobError
from mapred.shards import Shard
from mapred.worker.fetch import HASH_CHUNK

_DIGESTS: dict[tuple[Any, ...], str] = {}
_DIGESTS_LOCK = threading.Lock()


def shard_key(shard: Shard) -> tuple[Any, ...]:
    """What names a shard's bytes without reading them: each piece's real path, file size,
    mtime_ns and byte range."""
    return tuple((str(p.file.path), p.file.size, p.file.mtime_ns, p.start, p.end)
                 for p in shard.pieces)


def known_digest(shard: Shard) -> str | None:
    """The shard's sha256 if this process has computed it, else None (nothing is read)."""
    with _DIGESTS_LOCK:
        return _DIGESTS.get(shard_key(shard))


def shard_digest(shard: Shard) -> str:
    """sha256 of the shard's bytes (its pieces concatenated); memoised per process."""
    key = shard_key(shard)
    with _DIGESTS_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    for p in shard.pieces:
        with open(p.file.path, "rb") as f:
            f.seek(p.start)
            left = p.size
            while left > 0:
                n = f.readinto(view[: min(left, HASH_CHUNK)])
                if not n:
                    raise JobError(f"input file shrank during the run: {p.file.rel}")
                h.update(view[:n])
                left -= n
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def check_unchanged(shard: Shard) -> None:
    """Raise if an input file changed since it was planned (its cached copy would lie)."""
    for p in shard.pieces:
        try:
            st = os.stat(p.file.path)
        except OSError as e:
            raise JobError(f"input file vanished during the run: {p.file.rel}") from e
        if st.st_size != p.file.size or st.st_mtime_ns != p.file.mtime_ns:
            raise JobError(f"input file changed during the run: {p.file.rel}")


def stage_shard(shard: Shard, directory: Path, digest: str) -> tuple[str, bool]:
    """A local file holding exactly the shard's bytes: (path, whether it is a temporary copy)."""
    if len(shard.pieces) == 1:
        p = shard.pieces[0]
        if p.start == 0 and p.end == p.file.size:
            return os.path.abspath(p.file.path), False
    path = directory / f".{digest}.{secrets.token_hex(4)}"
    with open(path, "wb") as out:
        for p in shard.pieces:
            with open(p.file.path, "rb") as src:
                _copy_range(src.fileno(), out.fileno(), p.start, p.size)
    return str(path), True


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, count, offset)
        except OSError:  # another filesystem type or an old kernel: plain copy
            n = 0
        if n == 0:
            os.lseek(src, offset, os.SEEK_SET)
            data = os.read(src, min(count, HASH_CHUNK))
            if not data:
                raise JobError("input file shrank during the run")
            n = os.write(dst, data)
        offset += n
        count -= n


def shard_pieces(shard: Shard, remote_file: str) -> list[dict[str, Any]]:
    """The map request's pieces for a shard sent as one file: ranges of that file."""
    out, offset = [], 0
    for p in shard.pieces:
        out.append({"path": remote_file, "rel": p.file.rel, "start": offset,
                    "end": offset + p.size, "gzip": p.file.gzip, "origin": p.start})
        offset += p.size
    return out
