"""Cutting a corpus into newline-aligned byte-range shards.

A record is a line: the bytes up to and including a newline, or up to the end of the file. A record
belongs to the shard in which it starts. The planner aligns every cut to a record start, so each shard
is an exact byte range ``[start, end)`` holding whole records, the shards of a file tile it without
gaps or overlap, and workers never look past their range. gzip files (recognised by their magic
bytes) are one shard each, decompressed by the worker.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mapred.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One regular input file of the corpus."""

    path: Path  # absolute
    rel: str  # path relative to the corpus root, as shown to users and jobs
    size: int
    mtime_ns: int
    gzip: bool


@dataclass(frozen=True)
class Piece:
    """A byte range ``[start, end)`` of one input file holding whole records."""

    file: InputFile
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def describe(self) -> str:
        return f"{self.file.rel} bytes {self.start}-{self.end}"


@dataclass(frozen=True)
class Shard:
    """The input of one map task: a piece of a large file, or several whole small files."""

    task: str  # map task id, e.g. "m00012"
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)

    def describe(self) -> str:
        """Human form used in errors: file and byte range (or the files of a pack)."""
        if len(self.pieces) == 1:
            return self.pieces[0].describe()
        names = ", ".join(p.file.rel for p in self.pieces[:3])
        more = f" and {len(self.pieces) - 3} more" if len(self.pieces) > 3 else ""
        return f"{len(self.pieces)} whole files: {names}{more}"


def list_inputs(corpus: Path) -> list[InputFile]:
    """Return the corpus's input files in a stable (sorted) order.

    A file is its own corpus. A directory is walked recursively; hidden files and folders (names
    starting with ".") are skipped, so are non-regular files; symlinks are followed only when they
    point inside the corpus, otherwise refused.
    """
    if not os.path.lexists(corpus):
        raise UsageError(f"corpus not found: {corpus}")
    root = corpus.resolve()
    if root.is_file():
        return [_input_file(root, corpus.name)]
    if not root.is_dir():
        raise UsageError(f"corpus is neither a regular file nor a directory: {corpus}")
    files = [_input_file(p, rel) for p, rel in _walk(root, root, set())]
    if not files:
        raise UsageError(f"corpus has no input files (hidden files are skipped): {corpus}")
    return files


def _walk(root: Path, directory: Path, seen: set[Path]) -> Iterator[tuple[Path, str]]:
    real = directory.resolve()
    if real in seen:
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
    except OSError as e:
        raise UsageError(f"cannot read corpus directory {directory}: {e.strerror}") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise UsageError(f"symlink points outside the corpus: {path} -> {target}")
        if entry.is_dir():
            yield from _walk(root, path, seen)
        elif entry.is_file():
            yield path, os.fsdecode(path.relative_to(root))


def _input_file(path: Path, rel: str) -> InputFile:
    try:
        st = path.stat()
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise UsageError(f"cannot read input file {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"input is not a regular file: {path}")
    return InputFile(path, rel, st.st_size, st.st_mtime_ns, head == GZIP_MAGIC)


def align(f, pos: int, size: int) -> int:  # noqa: ANN001 - any binary file object
    """Return the start of the first record starting at or after ``pos`` (or ``size``)."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    while True:
        chunk = f.read(_SCAN_CHUNK)
        if not chunk:
            return size
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(chunk)


def cut_file(f, size: int, shard_size: int) -> list[tuple[int, int]]:  # noqa: ANN001
    """Byte ranges ``[start, end)`` tiling ``[0, size)``, each made of whole records."""
    cuts = [0]
    for nominal in range(shard_size, size, shard_size):
        cut = align(f, max(nominal, cuts[-1]), size)
        if cut > cuts[-1] and cut < size:
            cuts.append(cut)
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


MAX_PACK_FILES = 4096


def plan(files: list[InputFile], shard_size: int) -> list[Shard]:
    """Cut large files into shard-size pieces; pack small whole files together up to shard size.

    gzip files are one shard each. Task ids follow the file order.
    """
    if shard_size < 1:
        raise UsageError(f"shard size must be positive, got {shard_size}")
    groups: list[list[Piece]] = []
    pack: list[Piece] = []
    packed = 0
    for inp in files:
        if inp.size == 0:
            continue
        if inp.gzip or inp.size >= shard_size:
            groups.extend([p] for p in _pieces(inp, shard_size))
            continue
        if pack and (packed + inp.size > shard_size or len(pack) >= MAX_PACK_FILES):
            groups.append(pack)
            pack, packed = [], 0
        pack.append(Piece(inp, 0, inp.size))
        packed += inp.size
    if pack:
        groups.append(pack)
    return [Shard(f"m{i:05d}", tuple(g)) for i, g in enumerate(groups)]


def _pieces(inp: InputFile, shard_size: int) -> list[Piece]:
    if inp.gzip:
        return [Piece(inp, 0, inp.size)]
    try:
        with open(inp.path, "rb") as f:
            ranges = cut_file(f, inp.size, shard_size)
    except OSError as e:
        raise UsageError(f"cannot read input file {inp.path}: {e.strerror}") from e
    return [Piece(inp, a, b) for a, b in ranges]


def auto_shard_size(total: int, slots: int, limit: int) -> int:
    """Shard size giving every slot about three shards (load balance), within [1 MiB, limit]."""
    target = -(-total // max(1, slots * 3))
    return max(1, min(limit, max(1 << 20, target)))
