"""Cutting a corpus into newline-aligned byte-range shards.

A record is a line: the bytes up to and including a newline, or up to the end of the file. A record
belongs to the shard in which it starts. The planner aligns every cut to a record start, so each shard
is an exact byte range ``[start, end)`` holding whole records, the shards of a file tile it without
gaps or overlap, and workers never look past their range. gzip files (recognised by their magic
bytes) are one shard each, decompressed by the worker.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from mapred.errors import UsageError

log = logging.getLogger("mapred")

GZIP_MAGIC = b"\x1f\x8b"
_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One regular input file of the corpus."""

    path: Path  # absolute and real (no symlink in it): the file that is read and shipped
    rel: str  # path relative to the corpus root, as shown to users and jobs
    size: int
    mtime_ns: int
    gzip: bool
    via_link: bool = False  # reached through a symlink: ``path`` is its target, not root/rel


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


def list_inputs(corpus: Path, follow_symlinks: bool = False,
                output: Path | None = None) -> list[InputFile]:
    """Return the corpus's input files, each real file once, in a stable (sorted) order.

    A file is its own corpus. A directory is walked recursively, names sorted by their bytes;
    hidden files and folders (names starting with ".") and non-regular files are skipped. A real
    file (``st_dev``, ``st_ino``) is read once, whatever names it has: a path without a symlink
    wins, else the first in walk order; the others are skipped (logged at debug, counted in one
    info line). A symlink whose target lies outside the corpus is refused unless
    ``follow_symlinks``; a dangling one is skipped with a warning; a folder reached again (a
    cycle) is not walked twice. ``output``, when given, must not be among what links lead to.
    """
    if not os.path.lexists(corpus):
        raise UsageError(f"corpus not found: {corpus}")
    root = corpus.resolve()
    if root.is_file():
        return [_input_file(root, corpus.name, os.path.abspath(corpus) != str(root))]
    if not root.is_dir():
        raise UsageError(f"corpus is neither a regular file nor a directory: {corpus}")
    walk = _Walk(root, follow_symlinks)
    walk.run()
    if not walk.found:
        raise UsageError(f"corpus has no input files (hidden files are skipped): {corpus}")
    walk.report()
    files = sorted(walk.found, key=lambda f: _order(f.rel))
    if output is not None:
        _check_not_output(files, output)
    return files


class _Walk:
    """One walk of a corpus directory: files reached directly first, then through symlinks.

    Every path built is the real one (no symlink in it): a link's target is walked by its
    resolved path, under the link's name in ``rel``.
    """

    def __init__(self, root: Path, follow: bool) -> None:
        self.root, self.follow = root, follow
        self.dirs: set[tuple[int, int]] = set()  # (st_dev, st_ino) of the folders walked
        self.files: dict[tuple[int, int], str] = {}  # real file -> rel of the path read
        self.found: list[InputFile] = []
        self.skipped = 0  # names of a file or folder already read
        self.outside: list[tuple[str, str]] = []  # (link, target) not followed

    def run(self) -> None:
        links: list[tuple[Path, str]] = []
        self._dir(self.root, "", links, False)
        self._links(links)
        if self.outside:
            link, target = self.outside[0]
            more = f" (and {len(self.outside) - 1} more)" if len(self.outside) > 1 else ""
            raise UsageError(f"symlink points outside the corpus: {link} -> {target}{more}; "
                             "--follow-symlinks reads what such links point to")

    def _dir(self, directory: Path, rel: str, links: list[tuple[Path, str]],
             via_link: bool) -> None:
        """Walk a real folder: claim its files, walk its folders, queue its symlinks."""
        try:
            st = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
        except OSError as e:
            raise UsageError(f"cannot read corpus directory {directory}: {e.strerror}") from e
        self.dirs.add((st.st_dev, st.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, sub = Path(entry.path), f"{rel}{entry.name}"
            if entry.is_symlink():
                links.append((path, sub))
            elif entry.is_dir(follow_symlinks=False):
                if _key(entry.stat(follow_symlinks=False)) not in self.dirs:
                    self._dir(path, sub + "/", links, via_link)
            elif entry.is_file(follow_symlinks=False):
                self._file(path, sub, _key(entry.stat(follow_symlinks=False)), via_link)

    def _file(self, path: Path, rel: str, key: tuple[int, int], via_link: bool) -> None:
        if key in self.files:
            self.skipped += 1
            log.debug("corpus: %s skipped: same file as %s", rel, self.files[key])
            return
        self.files[key] = rel
        self.found.append(_input_file(path, rel, via_link))

    def _links(self, links: list[tuple[Path, str]]) -> None:
        """Follow the queued symlinks in walk order (a folder's own links right after it)."""
        for link, rel in links:
            target = Path(os.path.realpath(link))
            try:
                st = os.stat(link)
            except OSError as e:
                self._unreadable(link, target, e)
                continue
            if not target.is_relative_to(self.root):
                if not self.follow:
                    self.outside.append((str(link), str(target)))
                    continue
                log.debug("corpus: following %s -> %s (outside the corpus)", rel, target)
            if stat.S_ISDIR(st.st_mode):
                self._link_dir(target, rel, _key(st))
            elif stat.S_ISREG(st.st_mode):
                self._file(target, rel, _key(st), True)

    def _link_dir(self, target: Path, rel: str, key: tuple[int, int]) -> None:
        if key in self.dirs:  # read directly, through another link, or an ancestor: a cycle
            self.skipped += 1
            log.debug("corpus: %s -> %s skipped: that folder is already read", rel, target)
            return
        inner: list[tuple[Path, str]] = []
        self._dir(target, rel + "/", inner, True)
        self._links(inner)

    @staticmethod
    def _unreadable(link: Path, target: Path, e: OSError) -> None:
        """A dangling link holds no bytes: skipped, with a warning; any other error stops."""
        if e.errno == errno.ELOOP:
            log.warning("skipped symlink %s: it leads to a loop of symlinks", link)
        elif e.errno in (errno.ENOENT, errno.ENOTDIR):
            log.warning("skipped dangling symlink %s -> %s: its target does not exist",
                        link, target)
        else:
            raise UsageError(f"cannot read symlink target {link} -> {target}: {e.strerror}") \
                from e

    def report(self) -> None:
        if self.skipped:
            log.info("corpus: skipped %d %s to files or folders already read (each file is "
                     "read once; -v names them)", self.skipped,
                     "symlink or hard link" if self.skipped == 1 else "symlinks or hard links")


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _order(rel: str) -> tuple[bytes, ...]:
    """Walk order: folder by folder, names sorted by their bytes."""
    return tuple(os.fsencode(part) for part in rel.split("/"))


def _check_not_output(files: list[InputFile], output: Path) -> None:
    out = output.resolve()
    for f in files:
        if f.via_link and f.path.is_relative_to(out):
            raise UsageError(f"corpus file {f.rel} (reached through a symlink) is in the "
                             f"output {output}; choose another output")


def _input_file(path: Path, rel: str, via_link: bool = False) -> InputFile:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(2) if stat.S_ISREG(st.st_mode) else b""
    except OSError as e:
        raise UsageError(f"cannot read input file {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"input is not a regular file: {path}")
    return InputFile(path, rel, st.st_size, st.st_mtime_ns, head == GZIP_MAGIC, via_link)


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
