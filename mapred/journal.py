"""The run directory: ``plan.json``, ``events.jsonl`` (appended as the run goes) and ``summary.json``.

Written by the coordinator only; read by ``mapred runs/show/report`` (see ``history.py``). Every
event line carries ``ts`` (epoch seconds) and ``event``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from mapred import paths


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


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
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        self._events.write(json.dumps(record, default=str) + "\n")
        self._events.flush()

    def close(self) -> None:
        self._events.close()
