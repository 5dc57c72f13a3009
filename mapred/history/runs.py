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
import os
import time
from collections.abc import Iterable
from pathlib import Path

from mapred import paths
from mapred.errors import UsageError
from mapred.history.build import (  # noqa: F401 - history's public names
    COUNTERS,
    _counters,
    build_attempts,
    build_hosts,
    build_startups,
    derive_counters,
)
from mapred.history.model import (  # noqa: F401 - history's public names
    EVENTS_FILE,
    FINAL_STATUSES,
    JSON,
    MAX_CANDIDATES,
    MAX_NOTES,
    OUTCOMES,
    PID_START_SLACK,
    PLAN_FILE,
    SUMMARY_FILE,
    Attempt,
    HostStats,
    Marker,
    Run,
    RunInfo,
    Shard,
    Startup,
    Transfer,
    _first_num,
    _int,
    _num,
    _short,
    _str,
    display_text,
)
from mapred.words import plural


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
