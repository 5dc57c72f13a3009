"""The run directory: ``plan.json``, ``events.jsonl`` (appended as the run goes) and ``summary.json``.

Written by the coordinator only; read by ``mapred runs/show/report`` (see ``history.py``). Every
event line carries ``ts`` (epoch seconds) and ``event``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mapred import paths


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def now() -> float:
    """A timestamp as events carry it (``ts``)."""
    return round(time.time(), 6)


def attempt_times(info: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ``task_end`` adds on where an attempt's time went besides computing (read
    by ``history_build._transfers``): ``staging`` ({start, how...}) only when the attempt ended
    before its input was in place (else ``task_start`` carries it, with its ``end``),
    ``fetched`` ({end, bytes}) when its worker said its reduce inputs were fetched, and
    ``reported`` (ts) when its worker said it was done: checking its map outputs or collecting
    its part file took the rest."""
    out = {k: info[k] for k in ("fetched", "reported") if k in info}
    staging = info.get("staging")
    if staging and "end" not in staging:
        out["staging"] = staging
    return out


class Journal:
    def __init__(self, state: Path, run_id: str) -> None:
        self.dir = paths.run_dir(state, run_id)
        self.dir.mkdir(parents=True, mode=0o700)
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.dir / name)

    def event(self, event: str, **fields: Any) -> None:
        record = {"ts": now(), "event": event, **fields}
        self._events.write(json.dumps(record, default=str) + "\n")
        self._events.flush()

    def close(self) -> None:
        self._events.close()


def journal_sums(run_dir: Path) -> dict[str, list[Any]]:
    """map output path -> [size, sha256] from a run's committed map attempts."""
    out: dict[str, list[Any]] = {}
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if ev.get("event") == "task_end" and ev.get("outcome") == "ok" and ev.get("sums"):
            out.update(ev["sums"])
    return out


class RunInfo(Protocol):
    """What plan.json and summary.json say about a run's configuration (``RunConfig``)."""

    @property
    def job(self) -> Path: ...
    @property
    def corpus(self) -> Path: ...
    @property
    def output(self) -> Path: ...
    @property
    def argv(self) -> tuple[str, ...]: ...
    @property
    def params(self) -> dict[str, str]: ...


def write_plan(journal: Journal, run_id: str, cfg: RunInfo, reducers: int,
               fingerprint: dict[str, Any], resumed_from: str | None,
               hosts: list[dict[str, Any]], shards: list[dict[str, Any]]) -> None:
    journal.write_json("plan.json", {
        "run_id": run_id, "job": str(cfg.job), "corpus": str(cfg.corpus),
        "output": str(cfg.output), "output_abs": str(cfg.output.resolve()),
        "argv": list(cfg.argv), "started": time.time(),
        "pid": os.getpid(), "reducers": reducers, "params": cfg.params,
        "fingerprint": fingerprint, "resumed_from": resumed_from,
        "hosts": hosts, "shards": shards,
    })


@dataclass(frozen=True)
class Ending:
    """How a run ended, as summary.json says."""

    status: str
    exit_code: int
    error: str | None
    detail: str | None
    seconds: float


def write_summary(journal: Journal, run_id: str, cfg: RunInfo, end: Ending,
                  counters: dict[str, Any], hosts: dict[str, dict[str, float]],
                  lost_hosts: dict[str, str]) -> dict[str, Any]:
    """Write summary.json; what it holds."""
    data = {
        "run_id": run_id, "job": str(cfg.job), "corpus": str(cfg.corpus),
        "output": str(cfg.output), "status": end.status, "exit_code": end.exit_code,
        "started": time.time() - end.seconds, "ended": time.time(), "duration": end.seconds,
        "error": end.error, "detail": end.detail, "counters": counters,
        "hosts": hosts, "lost_hosts": dict(lost_hosts),
    }
    journal.write_json("summary.json", data)
    return data
