"""Run history: list and load the run directories the coordinator writes.

Each run lives in ``STATE/runs/<run_id>/`` (see `mapred.paths`) and holds ``plan.json`` (written at
start), ``events.jsonl`` (appended while the run goes) and ``summary.json`` (written at the end).
Reading is forgiving by contract: a missing, truncated or corrupt file never raises here. A run
whose files cannot be trusted gets status ``unknown`` and a line in `Run.notes`; a partial last
line of ``events.jsonl`` (the coordinator was killed mid-write) is ignored.

Status of a run, in order:

* ``summary.json`` readable -> its ``status`` (``succeeded`` / ``failed`` / ``interrupted``);
* ``summary.json`` corrupt -> ``unknown``;
* no summary, the coordinator pid from ``plan.json`` still alive -> ``running``;
* no summary, that pid gone -> ``crashed``; no usable plan or pid -> ``unknown``.

The only error raised is `UsageError`: by `load_run` when a run reference matches no run or
several, and when ``STATE/runs`` itself cannot be read.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.errors import UsageError
from mapred.words import plural

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


# --------------------------------------------------------------------------- data model


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


# --------------------------------------------------------------------------- locating runs


def state_dir(explicit: Path | None = None) -> Path:
    """``--state-dir``, else ``$XDG_STATE_HOME/mapred``, else ``~/.local/state/mapred``."""
    return paths.state_dir(explicit)


def runs_root(state: Path) -> Path:
    """``STATE/runs``; derived from `paths.run_dir` so the layout is defined once."""
    return paths.run_dir(state, "x").parent


def run_ids(state: Path) -> list[str]:
    """Ids of the run directories under ``STATE/runs``, newest first (ids sort by time).

    No such directory means no runs; an unreadable one raises `UsageError`.
    """
    root = runs_root(state)
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise UsageError(f"cannot read the run history in {root}: {e.strerror or e}") from e
    ids = [e.name for e in entries if not e.name.startswith(".") and _is_dir(e)]
    return sorted(ids, reverse=True)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def resolve_run(state: Path, ref: str) -> Path:
    """The run directory for an id, any part of an id (``20261127``, ``T1810``, ``2112e0``), or a
    path to a run directory.

    A part names the one id containing it; when several do, the one it starts, if only one;
    else `UsageError` (exit 2) listing them. Nothing matching is a `UsageError` naming ``ref``.
    """
    if os.sep in ref or ref in (".", ".."):
        candidate = Path(ref)
        if not candidate.is_dir():
            raise UsageError(f"run directory {ref!r} does not exist")
        if not any((candidate / f).exists() for f in (PLAN_FILE, EVENTS_FILE, SUMMARY_FILE)):
            raise UsageError(f"{ref!r} is not a run directory (no {PLAN_FILE} or {EVENTS_FILE})")
        return candidate
    ids = run_ids(state)
    if ref in ids:
        return paths.run_dir(state, ref)
    matches = [i for i in ids if ref in i] if ref else []
    if len(matches) > 1:  # a part that starts one id and only appears inside the others
        matches = [i for i in matches if i.startswith(ref)] or matches
    if len(matches) == 1:
        return paths.run_dir(state, matches[0])
    if not matches:
        raise UsageError(f"no run matches {ref!r} in {runs_root(state)} (see `mapred runs`)")
    shown = ", ".join(matches[:MAX_CANDIDATES])
    if len(matches) > MAX_CANDIDATES:
        shown += f" and {len(matches) - MAX_CANDIDATES} more"
    raise UsageError(f"run id {ref!r} is ambiguous: {len(matches)} runs match it: {shown} "
                     "(give more of the id)")


# --------------------------------------------------------------------------- listing


def list_runs(state: Path, limit: int | None = None) -> list[RunInfo]:
    """Runs under ``STATE/runs``, newest first, at most ``limit`` of them.

    Damaged run directories are listed (status ``unknown``), never raised about.
    """
    ids = run_ids(state)
    if limit is not None:
        ids = ids[: max(0, limit)]
    return [run_info(paths.run_dir(state, i)) for i in ids]


def run_info(path: Path) -> RunInfo:
    """The `RunInfo` of one run directory, reading only the plan, summary and the log's tail."""
    notes: list[str] = []
    plan, plan_ok = _read_json(path / PLAN_FILE, notes)
    summary, summary_ok = _read_json(path / SUMMARY_FILE, notes)
    status = _status(plan, plan_ok, summary, summary_ok)
    source = summary or plan or {}
    started = _num(source.get("started")) or _num((plan or {}).get("started"))
    duration = _num(summary.get("duration")) if summary else None
    if duration is None and started is not None:
        last = time.time() if status == "running" else _last_event_ts(path / EVENTS_FILE)
        duration = max(0.0, last - started) if last is not None else None
    return RunInfo(
        run_id=path.name,
        path=path,
        job=_str(source.get("job")) or _str((plan or {}).get("job")),
        corpus=_str(source.get("corpus")) or _str((plan or {}).get("corpus")),
        started=started,
        duration=duration,
        status=status,
    )


def _status(plan: JSON | None, plan_ok: bool, summary: JSON | None, summary_ok: bool) -> str:
    if summary is not None:
        status = summary.get("status")
        return status if status in FINAL_STATUSES else "unknown"
    if not summary_ok or plan is None:
        return "unknown"
    pid = _int(plan.get("pid"))
    if pid is None or pid <= 0:
        return "unknown"
    return "running" if pid_alive(pid, _num(plan.get("started"))) else "crashed"


def pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) not a later process reusing the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return False
    began = _process_start_time(pid)
    return not (began is not None and started is not None and began > started + PID_START_SLACK)


def _process_start_time(pid: int) -> float | None:
    """Epoch start time of ``pid`` from /proc (Linux), or None where that is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = float(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, after comm
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


# --------------------------------------------------------------------------- loading one run


def load_run(state: Path, ref: str) -> Run:
    """Load the run named by an id, a part of one (see `resolve_run`) or a run directory path.

    Raises `UsageError` for an unknown or ambiguous reference; file damage only adds notes.
    """
    return load_run_dir(resolve_run(state, ref))


def load_run_dir(path: Path) -> Run:
    """Load a run directory: plan, events, summary, attempts and per-host figures."""
    notes: list[str] = []
    plan, plan_ok = _read_json(path / PLAN_FILE, notes)
    summary, summary_ok = _read_json(path / SUMMARY_FILE, notes)
    events = read_events(path / EVENTS_FILE, notes)
    status = _status(plan, plan_ok, summary, summary_ok)
    if plan is None and plan_ok:
        notes.append(f"{PLAN_FILE} is missing")
    if summary is None and summary_ok and status != "running":
        notes.append(f"{SUMMARY_FILE} is missing: figures below are derived from the event log")
    plan = plan or {}
    recorded = _str((summary or {}).get("run_id")) or _str(plan.get("run_id"))
    if recorded and recorded != path.name:
        notes.append(f"the run's files name it {recorded!r}, its directory {path.name!r}")
    started = _first_num(summary, plan, key="started") or _first_event_ts(events)
    ended = _end_time(summary, events, status)
    attempts = build_attempts(events, plan, ended if ended is not None else time.time(), status)
    counters, derived = _counters(summary, attempts, events)
    return Run(
        run_id=path.name,
        path=path,
        status=status,
        job=_str((summary or {}).get("job")) or _str(plan.get("job")),
        corpus=_str((summary or {}).get("corpus")) or _str(plan.get("corpus")),
        output=_str((summary or {}).get("output")) or _str(plan.get("output")),
        started=started,
        ended=ended,
        exit_code=_exit_code(summary, events),
        error=_str((summary or {}).get("error")) or None,
        detail=_str((summary or {}).get("detail")) or None,
        counters=counters,
        counters_derived=derived,
        hosts=build_hosts(plan, summary, attempts, events),
        attempts=attempts,
        markers=_markers(events),
        startups=build_startups(events, ended if ended is not None else time.time()),
        argv=tuple(_str(a) for a in plan.get("argv", []) if isinstance(a, str))
        if isinstance(plan.get("argv"), list)
        else (),
        notes=tuple(notes[:MAX_NOTES]) + _more(len(notes) - MAX_NOTES),
        plan=plan,
        events=tuple(events),
        summary=summary,
    )


def _more(n: int) -> tuple[str, ...]:
    return (f"... and {plural(n, 'more note')}",) if n > 0 else ()


def _end_time(summary: JSON | None, events: list[JSON], status: str) -> float | None:
    if summary is not None and _num(summary.get("ended")) is not None:
        return _num(summary.get("ended"))
    if status == "running":
        return time.time()
    return max((e["ts"] for e in events), default=None)


def _exit_code(summary: JSON | None, events: list[JSON]) -> int | None:
    if summary is not None and _int(summary.get("exit_code")) is not None:
        return _int(summary.get("exit_code"))
    ends = [_int(e.get("exit_code")) for e in events if e["event"] == "run_end"]
    return ends[-1] if ends else None


def _markers(events: Iterable[JSON]) -> tuple[Marker, ...]:
    out = []
    for e in events:
        if e["event"] == "phase" and _str(e.get("phase")):
            out.append(Marker(e["ts"], "phase", _str(e.get("phase"))))
        elif e["event"] == "host_lost":
            host = _str(e.get("host"))
            out.append(Marker(e["ts"], "host_lost", _str(e.get("reason")), host=host))
    return tuple(out)


# --------------------------------------------------------------------------- files


def _read_json(path: Path, notes: list[str]) -> tuple[JSON | None, bool]:
    """(object, ok): (None, True) when the file is absent, (None, False) when it is damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, True
    except OSError as e:
        notes.append(f"{path.name}: cannot read it ({e.strerror or e})")
        return None, False
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        notes.append(f"{path.name} is corrupt ({_short(str(e))})")
        return None, False
    if not isinstance(obj, dict):
        notes.append(f"{path.name} is corrupt (not a JSON object)")
        return None, False
    return obj, True


def read_events(path: Path, notes: list[str] | None = None) -> list[JSON]:
    """The well-formed events of ``events.jsonl``, in file order.

    The last line is dropped unless newline-terminated (a killed writer leaves a partial line);
    other bad lines are skipped and reported in ``notes``.
    """
    notes = [] if notes is None else notes
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        notes.append(f"{path.name}: cannot read it ({e.strerror or e})")
        return []
    lines = raw.split(b"\n")
    lines.pop()  # b"" after a final newline, else a partial line
    events = []
    for number, line in enumerate(lines, 1):
        event = _parse_event(line)
        if event is not None:
            events.append(event)
        elif line.strip():
            notes.append(f"{path.name} line {number} is not a valid event (skipped)")
    return events


def _parse_event(line: bytes) -> JSON | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        return None
    ts = _num(obj.get("ts"))
    if ts is None:
        return None
    obj["ts"] = ts
    return obj


def _last_event_ts(path: Path, tail: int = 65536) -> float | None:
    """Timestamp of the last complete event, reading only the end of the file."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail))
            chunk = f.read()
    except OSError:
        return None
    for line in reversed(chunk.split(b"\n")[:-1]):
        event = _parse_event(line)
        if event is not None:
            return float(event["ts"])
    return None


def _first_event_ts(events: list[JSON]) -> float | None:
    return min((e["ts"] for e in events), default=None)


# --------------------------------------------------------------------------- attempts


def build_attempts(
    events: Iterable[JSON], plan: Mapping[str, Any], end_ts: float, status: str
) -> tuple[Attempt, ...]:
    """Pair ``task_start`` / ``task_end`` events into attempts, ordered by start time.

    An attempt with no end is ``lost`` if its host was lost after it started, else ``running``
    (run still going) or ``unfinished``, and is drawn up to ``end_ts``.
    """
    shards = _plan_shards(plan)
    open_: dict[str, JSON] = {}
    lost_at: dict[str, float] = {}
    done: list[Attempt] = []
    for e in events:
        if e["event"] == "task_start":
            open_[_attempt_id(e)] = e
        elif e["event"] == "task_end":
            start = open_.pop(_attempt_id(e), None)
            done.append(_attempt(start or e, e, shards, _str(e.get("outcome")) or "failed"))
        elif e["event"] == "host_lost":
            lost_at.setdefault(_str(e.get("host")), e["ts"])
    for start in open_.values():
        lost = lost_at.get(_str(start.get("host")))
        if lost is not None and lost >= start["ts"]:
            done.append(_attempt(start, {"ts": lost}, shards, "lost"))
        else:
            outcome = "running" if status == "running" else "unfinished"
            done.append(_attempt(start, {"ts": max(end_ts, start["ts"])}, shards, outcome))
    return tuple(sorted(done, key=lambda a: (a.start, a.attempt)))


def _attempt_id(e: Mapping[str, Any]) -> str:
    return _str(e.get("attempt")) or _str(e.get("task")) or "?"


def _attempt(start: JSON, end: JSON, shards: dict[str, Shard], outcome: str) -> Attempt:
    task = _str(start.get("task")) or _str(end.get("task"))
    t0, t1 = start["ts"], max(end["ts"], start["ts"])
    return Attempt(
        attempt=_attempt_id(start),
        task=task,
        kind=_str(start.get("kind")) or _str(end.get("kind")) or _guess_kind(task),
        host=_str(start.get("host")) or _str(end.get("host")) or "?",
        slot=max(0, min(_int(start.get("slot")) or 0, 4096)),
        backup=start.get("backup") is True,
        start=t0,
        end=t1,
        outcome=outcome if outcome in OUTCOMES + ("running", "unfinished") else "failed",
        bytes_in=_int(end.get("bytes_in")) or 0,
        bytes_out=_int(end.get("bytes_out")) or 0,
        records=_int(end.get("records")) or 0,
        keys=_int(end.get("keys")) or 0,
        error=_str(end.get("error")) or None,
        shard=_shard(start.get("shard")) or shards.get(task),
        partition=_int(start.get("partition")),
        transfers=_transfers(start, end, t0, t1),
        detail=_str(end.get("detail")) or None,
    )


def _transfers(start: JSON, end: JSON, t0: float, t1: float) -> tuple[Transfer, ...]:
    """An attempt's transfers from its events' ``staging``, ``fetched`` and ``reported``
    fields (written by ``journal.attempt_times`` and the runner), clamped to its span: staging
    ends by ``t0`` when the worker got the task, else (it ended while staging) by ``t1``."""
    out = []
    if start is not end and isinstance(start.get("staging"), dict):
        staging, stop = start["staging"], t0  # its worker got the task at t0
    else:
        staging, stop = end.get("staging"), t1  # it ended while staging, if at all
    begin = _num(staging.get("start")) if isinstance(staging, dict) else None
    if isinstance(staging, dict) and begin is not None:
        until = min(_num(staging.get("end")) or stop, stop)
        out.append(Transfer("stage", min(begin, until), until, _short(_str(staging.get("how")), 24),
                            _int(staging.get("bytes")), _short(_str(staging.get("peer"))) or None))
    fetched = end.get("fetched")
    if isinstance(fetched, dict) and _num(fetched.get("end")) is not None:
        out.append(Transfer("fetch", t0, _clamp(_num(fetched.get("end")), t0, t1),
                            nbytes=_int(fetched.get("bytes"))))
    reported = _num(end.get("reported"))
    if reported is not None:
        out.append(Transfer("collect", _clamp(reported, t0, t1), t1))
    return tuple(out)


def _clamp(x: float | None, lo: float, hi: float) -> float:
    return lo if x is None else max(lo, min(x, hi))


def build_startups(events: Iterable[JSON], end_ts: float) -> tuple[Startup, ...]:
    """Pair ``worker_start`` / ``worker_ready`` events per (host, slot); a start never followed
    by a ready ends at the slot's next start, its host's loss, or ``end_ts``."""
    open_: dict[tuple[str, int], float] = {}
    out: list[Startup] = []
    for e in events:
        host, slot = _str(e.get("host")), _int(e.get("slot"))
        key = (host, max(0, min(slot or 0, 4096)))
        if e["event"] == "worker_start" and slot is not None:
            if key in open_:
                out.append(Startup(host, key[1], open_.pop(key), e["ts"], False))
            open_[key] = e["ts"]
        elif e["event"] == "worker_ready" and key in open_:
            out.append(Startup(host, key[1], open_.pop(key), e["ts"], True))
        elif e["event"] == "host_lost":
            for k in [k for k in open_ if k[0] == host]:
                out.append(Startup(host, k[1], open_.pop(k), e["ts"], False))
    out += [Startup(h, s, t, max(t, end_ts), False) for (h, s), t in open_.items()]
    return tuple(sorted(out, key=lambda w: (w.start, w.host, w.slot)))


def _guess_kind(task: str) -> str:
    return {"m": "map", "r": "reduce"}.get(task[:1], "map")


def _shard(obj: Any) -> Shard | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
        return None
    return Shard(
        obj["path"],
        _int(obj.get("start")) or 0,
        _int(obj.get("end")) or 0,
        files=max(1, _int(obj.get("files")) or 1),
        nbytes=_int(obj.get("bytes")),
    )


def _plan_shards(plan: Mapping[str, Any]) -> dict[str, Shard]:
    out = {}
    for s in plan.get("shards") or []:
        shard = _shard(s)
        if shard is not None and isinstance(s.get("task"), str):
            out[s["task"]] = shard
    return out


# --------------------------------------------------------------------------- hosts, counters


def build_hosts(
    plan: Mapping[str, Any],
    summary: Mapping[str, Any] | None,
    attempts: Iterable[Attempt],
    events: Iterable[JSON],
) -> tuple[HostStats, ...]:
    """Per-host figures: plan hosts first (in plan order), then any other host seen."""
    attempts = list(attempts)
    declared = [h for h in plan.get("hosts") or [] if isinstance(h, dict) and _str(h.get("name"))]
    names = [_str(h.get("name")) for h in declared]
    given = summary.get("hosts") if summary is not None else None
    sums: dict[str, Any] = given if isinstance(given, dict) else {}
    for name in sorted({a.host for a in attempts} | {k for k in sums if isinstance(k, str)}):
        if name not in names:
            names.append(name)
    lost: dict[str, str] = {}
    for e in events:
        if e["event"] == "host_lost":
            lost.setdefault(_str(e.get("host")), _str(e.get("reason")) or "lost")
    info = {_str(h.get("name")): h for h in declared}
    return tuple(
        _host(n, info.get(n, {}), sums.get(n), [a for a in attempts if a.host == n], lost.get(n))
        for n in dict.fromkeys(names)
    )


def _host(
    name: str, decl: Mapping[str, Any], summ: Any, attempts: list[Attempt], lost: str | None
) -> HostStats:
    summ = summ if isinstance(summ, dict) else {}
    ok = [a for a in attempts if a.outcome == "ok"]
    derived_busy = sum(a.duration for a in attempts)
    busy = _num(summ.get("busy_seconds"))
    tasks, bytes_in = _int(summ.get("tasks")), _int(summ.get("bytes_in"))
    return HostStats(
        name=name,
        address=_str(decl.get("address")),
        cores=_int(decl.get("cores")),
        tasks=tasks if tasks is not None else len(ok),
        attempts=len(attempts),
        failed=sum(a.outcome in ("failed", "lost") for a in attempts),
        bytes_in=bytes_in if bytes_in is not None else sum(a.bytes_in for a in ok),
        busy_seconds=busy if busy is not None else derived_busy,
        slots=max([a.slot + 1 for a in attempts] + [1]),
        lost=lost,
    )


COUNTERS = (
    "bytes_in",
    "records_in",
    "pairs",
    "keys_out",
    "bytes_out",
    "map_tasks",
    "reduce_tasks",
    "retries",
    "backups",
    "hosts_lost",
)


def _counters(
    summary: JSON | None, attempts: tuple[Attempt, ...], events: list[JSON]
) -> tuple[dict[str, int | float], bool]:
    """(counters, derived): the summary's counters, else what the event log can tell."""
    given = summary.get("counters") if summary else None
    if isinstance(given, dict):
        out: dict[str, int | float] = {}
        for k, v in given.items():
            n = _num(v)
            if isinstance(k, str) and n is not None:
                out[k] = int(n) if float(n).is_integer() else n
        return out, False
    return derive_counters(attempts, events), True


def derive_counters(attempts: Iterable[Attempt], events: Iterable[JSON]) -> dict[str, int | float]:
    """Counters recomputed from attempts; ``pairs`` is not in the log and is left out."""
    attempts = list(attempts)
    maps = [a for a in attempts if a.kind == "map" and a.outcome == "ok"]
    reds = [a for a in attempts if a.kind == "reduce" and a.outcome == "ok"]
    first: dict[str, int] = {}
    for a in attempts:
        if not a.backup:
            first[a.task] = first.get(a.task, 0) + 1
    return {
        "bytes_in": sum(a.bytes_in for a in maps),
        "records_in": sum(a.records for a in maps),
        "keys_out": sum(a.keys for a in reds),
        "bytes_out": sum(a.bytes_out for a in reds),
        "map_tasks": len({a.task for a in maps}),  # committed, as in the summary
        "reduce_tasks": len({a.task for a in reds}),
        "retries": sum(n - 1 for n in first.values()),
        "backups": sum(a.backup for a in attempts),
        "hosts_lost": len({_str(e.get("host")) for e in events if e["event"] == "host_lost"}),
    }


# --------------------------------------------------------------------------- coercion


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


# --------------------------------------------------------------------------- display text

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
