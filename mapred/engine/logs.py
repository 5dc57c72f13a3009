"""Logging for people and for machines.

Text (default): ``mapred: LEVEL: message`` lines on stderr. JSON (``--log-format json``): every
stderr line is one JSON object — ``ts``, ``level``, ``event``, ``msg``, the run id once known, and
any fields passed as ``extra={"fields": {...}}`` (host, shard, task...). Nothing else is written
to stderr in JSON mode: progress bars are off and errors go through the same formatter.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("mapred")
context: dict[str, Any] = {}  # fields added to every JSON line (the runner sets run_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
            **context,
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[1] is not None:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``mapred: message`` for information, ``mapred: warning: message`` otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return f"mapred: {record.getMessage()}"
        return f"mapred: {record.levelname.lower()}: {record.getMessage()}"


def setup(level: int, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # paramiko logs a connection's failure, traceback included, from its transport thread; with
    # no handler Python's last-resort handler prints that to stderr beside mapred's own one-line
    # error naming the host. Keep it out of the user's terminal (debug runs still see it).
    paramiko_log = logging.getLogger("paramiko")
    paramiko_log.handlers[:] = [handler] if level <= logging.DEBUG else [logging.NullHandler()]
    paramiko_log.propagate = False


def json_mode() -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in log.handlers)


def emit_error(message: str, detail: str | None, code: int, fmt: str | None = None) -> None:
    """The final error report: one line (plus the user's traceback as detail)."""
    if fmt == "json" or (fmt is None and json_mode()):
        doc = {"ts": round(time.time(), 6), "level": "error", "event": "error", "msg": message,
               "exit_code": code, **context}
        if detail:
            doc["detail"] = detail
        print(json.dumps(doc, default=str), file=sys.stderr)
        return
    print(f"mapred: error: {message}", file=sys.stderr)
    if detail:
        print(detail, file=sys.stderr)
