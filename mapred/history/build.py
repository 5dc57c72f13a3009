"""A run's attempts, transfers, worker start-ups, per-host figures and counters, built from its
journal (``plan.json``, ``events.jsonl``, ``summary.json``) as `history` reads it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mapred.history.model import (
    JSON,
    OUTCOMES,
    Attempt,
    HostStats,
    Shard,
    Startup,
    Transfer,
    _int,
    _num,
    _short,
    _str,
)


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
