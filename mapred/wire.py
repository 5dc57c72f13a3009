"""The worker protocol on the wire: JSON-lines framing and one dataclass per message.

A request has an ``op``, an event an ``ev``; each is one JSON object on one line. Both sides use
these classes (the worker reads requests and writes events, the transports the reverse), so a
field is named in one place. Unknown fields are ignored on reading (an older peer may send more);
a message of an unknown kind decodes to None. Worker side: the standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


def encode(msg: Message) -> bytes:
    """One line of the protocol."""
    return (json.dumps(msg.to_json()) + "\n").encode()


def decode(line: bytes | str) -> Message | None:
    """The message on ``line``, or None for an unknown kind (ValueError: not a JSON object)."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"not a protocol message: {str(line)[:80]!r}")
    cls = _REQUESTS.get(obj.get("op")) or _EVENTS.get(obj.get("ev"))
    return None if cls is None else cls.from_json(obj)


class Message:
    """A request (``op``) or an event (``ev``) of the worker protocol."""

    kind: ClassVar[tuple[str, str]]  # ("op", "map"), ("ev", "done"), ...

    def to_json(self) -> dict[str, Any]:
        key, name = self.kind
        return {key: name, **{f.name: _plain(getattr(self, f.name))
                              for f in dataclasses.fields(self)}}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in obj.items() if k in names})


def _plain(value: Any) -> Any:
    if isinstance(value, Piece):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Piece:
    """A byte range of one input file as a worker reads it: the one shape of a piece from
    staging to the mapper."""

    path: str  # file to read on this host
    rel: str  # corpus-relative name, shown to users and jobs
    start: int
    end: int
    gzip: bool
    origin: int | None = None  # where ``start`` is in the corpus file (None: at ``start``;
    # a shard shipped to an SSH host is a file of its own, its pieces start elsewhere there)
    size: int | None = None  # the file's size and mtime when the run planned it: read in place
    mtime_ns: int | None = None  # (local runs), it must still have them (None: not checked)

    @property
    def first(self) -> int:
        """Offset of the piece's first byte in the corpus file."""
        return self.start if self.origin is None else self.origin

    def describe(self) -> str:
        return f"{self.rel} bytes {self.first}-{self.first + self.end - self.start}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Piece:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


# --- requests: coordinator -> worker ---------------------------------------------------------


@dataclass
class Init(Message):
    kind = ("op", "init")
    job: str
    reducers: int
    seed: int
    scratch: str
    params: dict[str, str] = field(default_factory=dict)
    slots: int = 1  # workers on this host
    memory: int | None = None  # bytes per worker (None: the worker's default)
    enter_scratch: bool = False  # SSH hosts: work in scratch (locally paths may be relative)
    job_sha256: str | None = None  # the job module must have it, else init fails
    job_helpers: dict[str, str] = field(default_factory=dict)  # its modules: rel -> sha256
    sample: dict[str, Any] | None = None  # the corpus's first records (warmup.py)


@dataclass
class MapRequest(Message):
    kind = ("op", "map")
    task: str
    attempt: str
    pieces: list[Piece]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MapRequest:
        return cls(obj["task"], obj["attempt"], [Piece.from_json(p) for p in obj["pieces"]])


@dataclass
class ReduceRequest(Message):
    kind = ("op", "reduce")
    task: str
    attempt: str
    partition: int
    inputs: list[Any]  # paths, or {"url": "rsync://...", "host": NAME, ...}: see fetch.py
    out: str


@dataclass
class Preload(Message):
    """Import numba and load the engine kernels now (while the coordinator plans)."""

    kind = ("op", "preload")


@dataclass
class Quit(Message):
    kind = ("op", "quit")


# --- events: worker -> coordinator -----------------------------------------------------------


@dataclass
class Ready(Message):
    kind = ("ev", "ready")
    pid: int
    tier: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class InitFailed(Message):
    kind = ("ev", "init_failed")
    error: str
    detail: str | None = None


@dataclass
class Progress(Message):
    kind = ("ev", "progress")
    attempt: str
    bytes: int


@dataclass
class Fetched(Message):
    """A reduce's inputs from other hosts are in place (``bytes`` of them)."""

    kind = ("ev", "fetched")
    attempt: str
    bytes: int


@dataclass
class Done(Message):
    kind = ("ev", "done")
    attempt: str
    seconds: float
    outputs: dict[str, list[str]]  # partition -> files
    counters: dict[str, int] = field(default_factory=dict)
    maxrss: int | None = None  # the worker's peak resident set size so far, bytes


@dataclass
class Failed(Message):
    kind = ("ev", "failed")
    attempt: str
    error: str
    detail: str | None = None


@dataclass
class Alive(Message):
    kind = ("ev", "alive")


_REQUESTS: dict[Any, Any] = {c.kind[1]: c for c in (Init, MapRequest, ReduceRequest, Preload, Quit)}
_EVENTS: dict[Any, Any] = {c.kind[1]: c for c in (Ready, InitFailed, Progress, Fetched, Done,
                                                  Failed, Alive)}
