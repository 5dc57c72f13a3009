"""What `mapred show` and `mapred report` know of a run: the data model, and forgiving readers
of the journal's values (a wrong type reads as None or "", never raises)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLAN_FILE = "plan.json"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
FINAL_STATUSES = ("succeeded", "failed", "interrupted")
OUTCOMES = ("ok", "failed", "killed", "lost")
MAX_NOTES = 20
MAX_CANDIDATES = 10  # run ids listed when a part of one is ambiguous


# A pid whose process started this long after the run's recorded start belongs to someone else
# (pids are reused); the slack absorbs /proc's whole-second boot time and clock adjustments.
PID_START_SLACK = 5.0
JSON = dict[str, Any]


@dataclass(frozen=True)
class RunInfo:
    """One line of ``mapred runs``: cheap to build (no full read of the event log)."""

    run_id: str
    path: Path
    job: str
    corpus: str
    started: float | None
    duration: float | None
    status: str


@dataclass(frozen=True)
class Shard:
    """A map task's input: from ``start`` in ``path`` to ``end`` in its last file.

    A shard may pack several small files (``files`` > 1); ``nbytes`` is its size when the
    journal records it.
    """

    path: str
    start: int
    end: int
    files: int = 1
    nbytes: int | None = None

    @property
    def size(self) -> int:
        return self.nbytes if self.nbytes is not None else max(0, self.end - self.start)

    def describe(self) -> str:
        """``a.txt [0, 4,096)``, or for a packed shard where its first and last file start/end."""
        if self.files == 1:
            return f"{self.path} [{self.start:,}, {self.end:,})"
        return f"{self.path} from byte {self.start:,}, {self.files} files, to byte {self.end:,}"


@dataclass(frozen=True)
class Transfer:
    """Part of an attempt spent moving bytes or waiting on them rather than computing.

    ``kind`` is ``stage`` (its map input put on the host, before the worker got the task;
    ``how``: ``in place``, ``cached``, ``sent`` with ``nbytes``, or ``copied`` from ``peer``),
    ``fetch`` (a reduce's map outputs fetched from other hosts, ``nbytes``: the start of its
    run) or ``collect`` (after its worker was done: its map outputs checked, its part file
    collected). Journals older than these fields have none.
    """

    kind: str
    start: float
    end: float
    how: str = ""
    nbytes: int | None = None
    peer: str | None = None

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Startup:
    """A worker starting in a slot (process, imports, job init, warm-up) until it was ready;
    ``ready`` False: it never was (``end`` is when it was replaced, its host lost, or the run
    ended)."""

    host: str
    slot: int
    start: float
    end: float
    ready: bool


@dataclass(frozen=True)
class Attempt:
    """One task attempt, paired from its ``task_start`` and ``task_end`` events.

    ``outcome`` is one of `OUTCOMES`, or ``running`` (no end yet, run still going) or
    ``unfinished`` (no end and the run is over). ``start`` is when its worker got it; its
    ``transfers`` may begin earlier (staging) and lie inside it (fetch, collect).
    """

    attempt: str
    task: str
    kind: str
    host: str
    slot: int
    backup: bool
    start: float
    end: float
    outcome: str
    bytes_in: int = 0
    bytes_out: int = 0
    records: int = 0
    keys: int = 0
    error: str | None = None
    shard: Shard | None = None
    partition: int | None = None
    transfers: tuple[Transfer, ...] = ()
    detail: str | None = None  # a failed attempt's traceback

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def staging(self) -> Transfer | None:
        return next((t for t in self.transfers if t.kind == "stage"), None)


@dataclass(frozen=True)
class HostStats:
    """Per-host figures: from ``summary.json`` when present, otherwise derived from events."""

    name: str
    address: str = ""
    cores: int | None = None
    tasks: int = 0
    attempts: int = 0
    failed: int = 0
    bytes_in: int = 0
    busy_seconds: float = 0.0
    slots: int = 1
    lost: str | None = None

    @property
    def throughput(self) -> float | None:
        """Bytes read per busy second (per slot), or None when the host did no timed work."""
        return self.bytes_in / self.busy_seconds if self.busy_seconds > 0 else None


@dataclass(frozen=True)
class Marker:
    """A point on the timeline: a phase change or a lost host."""

    ts: float
    kind: str
    label: str
    host: str | None = None


@dataclass(frozen=True)
class Run:
    """Everything known about one run; raw files in ``plan`` / ``events`` / ``summary``."""

    run_id: str
    path: Path
    status: str
    job: str
    corpus: str
    output: str
    started: float | None
    ended: float | None
    exit_code: int | None
    error: str | None
    counters: dict[str, int | float]
    counters_derived: bool
    hosts: tuple[HostStats, ...]
    attempts: tuple[Attempt, ...]
    markers: tuple[Marker, ...]
    argv: tuple[str, ...]
    notes: tuple[str, ...]
    plan: JSON = field(repr=False)
    events: tuple[JSON, ...] = field(repr=False)
    summary: JSON | None = field(repr=False)
    detail: str | None = None  # the error's further lines: a user's traceback
    startups: tuple[Startup, ...] = ()

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


def _num(v: Any) -> float | None:
    """A finite number, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _int(v: Any) -> int | None:
    n = _num(v)
    return int(n) if n is not None and abs(n) < 2**63 else None


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _first_num(*sources: Mapping[str, Any] | None, key: str) -> float | None:
    for s in sources:
        if s is not None and _num(s.get(key)) is not None:
            return _num(s.get(key))
    return None


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def display_text(s: str) -> str:
    """``s`` made safe to show: valid UTF-8, no control or bidi-override characters.

    File names decoded with ``surrogateescape`` come back as their raw bytes, shown ``\\xNN``;
    control and direction-override characters (which can make text lie) are shown escaped.
    """
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return _BAD_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)
