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
from pathlib import Path
from typing import Any

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
