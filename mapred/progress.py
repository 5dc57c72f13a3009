"""Progress reporting: a tqdm bar on a terminal, periodic log lines otherwise (cron, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from mapred.runner import Progress

log = logging.getLogger("mapred")
LOG_EVERY = 10.0


class BarProgress(Progress):
    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, total_bytes: int, shards: int) -> None:
        from tqdm import tqdm

        self.shards = shards
        self.done = 0
        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="map", file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.set_postfix_str(f"shards 0/{shards}")

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.update(min(nbytes, max(0, self.bar.total - self.bar.n)))

    def shard_done(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"shards {self.done}/{self.shards}")

    def phase(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogProgress(Progress):
    """One INFO line every LOG_EVERY seconds; never a carriage return."""

    def start(self, total_bytes: int, shards: int) -> None:
        self.total, self.shards, self.bytes, self.done = total_bytes, shards, 0, 0
        self.last = time.monotonic()

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes
        self._maybe_log()

    def shard_done(self) -> None:
        self.done += 1
        self._maybe_log()

    def phase(self, name: str) -> None:
        log.debug("phase %s", name, extra={"event": "phase", "fields": {"phase": name}})

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_EVERY:
            self.last = now
            done = min(self.bytes, self.total)
            log.info("map %d/%d shards, %d/%d bytes", self.done, self.shards, done, self.total,
                     extra={"event": "progress", "fields": {
                         "shards_done": self.done, "shards": self.shards, "bytes_done": done,
                         "bytes": self.total}})


def make_progress(quiet: bool) -> Progress:
    if quiet:
        return Progress()
    return BarProgress() if sys.stderr.isatty() else LogProgress()
