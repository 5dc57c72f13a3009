"""Progress reporting: a tqdm bar on a terminal, periodic log lines otherwise (cron, pipes,
``--log-format json``, where each line is a ``progress`` event: a heartbeat).

One unit system with the summary and ``mapred show``: input bytes as planned (on disk), shown in
binary units; the map phase counts bytes and shards, the reduce phase partitions.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractContextManager
from typing import Any

from mapred.engine.runner import Progress
from mapred.units import fmt_bytes

log = logging.getLogger("mapred")
LOG_EVERY = 10.0
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {counts} [{elapsed}<{remaining}]"


class _Counts:
    """What both kinds of progress show."""

    def start(self, total_bytes: int, shards: int) -> None:
        self.total, self.shards, self.bytes, self.done = total_bytes, shards, 0, 0
        self.partitions, self.parts_done = 0, 0
        self.reducing = False

    def text(self) -> str:
        if self.reducing:
            return f"reduce {self.parts_done}/{self.partitions} partitions"
        return (f"map {self.done}/{self.shards} shards, {fmt_bytes(min(self.bytes, self.total))}"
                f" of {fmt_bytes(self.total)}")

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": "reduce" if self.reducing else "map", "shards_done": self.done,
            "shards": self.shards, "bytes_done": min(self.bytes, self.total),
            "bytes": self.total}
        if self.reducing:
            out.update(partitions_done=self.parts_done, partitions=self.partitions)
        return out


class BarProgress(_Counts, Progress):
    """A tqdm bar on stderr; log lines printed meanwhile go above it (never through it)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.redirect: AbstractContextManager[Any] | None = None

    def start(self, total_bytes: int, shards: int) -> None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        super().start(total_bytes, shards)
        self.redirect = logging_redirect_tqdm(loggers=[log])
        self.redirect.__enter__()
        self._new_bar("map", max(total_bytes, 1))

    def _new_bar(self, desc: str, total: int) -> None:
        from tqdm import tqdm

        class Bar(tqdm):  # type: ignore[type-arg,misc]
            counts = ""

            @property
            def format_dict(self) -> dict[str, Any]:
                return {**super().format_dict, "counts": self.counts}

        if self.bar is not None:
            self.bar.close()
        Bar.counts = self._counts()  # shown from the first frame on
        self.bar = Bar(total=total, desc=desc, file=sys.stderr, leave=False,
                       dynamic_ncols=True, bar_format=BAR_FORMAT)

    def _counts(self) -> str:
        if self.reducing:
            return f"{self.parts_done}/{self.partitions} partitions"
        return (f"{fmt_bytes(min(self.bytes, self.total))}/{fmt_bytes(self.total)}, "
                f"{self.done}/{self.shards} shards")

    def _show(self) -> None:
        self.bar.counts = self._counts()

    def advance(self, nbytes: int) -> None:
        if self.bar is not None and not self.reducing:
            self.bytes += nbytes
            self._show()
            self.bar.update(nbytes)

    def shard_done(self) -> None:
        self.done += 1
        if self.bar is not None and not self.reducing:
            self._show()
            self.bar.refresh()

    def reduce_start(self, partitions: int) -> None:
        self.reducing, self.partitions = True, partitions
        if self.bar is not None:
            self._new_bar("reduce", max(partitions, 1))

    def partition_done(self) -> None:
        self.parts_done += 1
        if self.bar is not None and self.reducing:
            self._show()
            self.bar.update(1)

    def phase(self, name: str) -> None:
        if self.bar is not None and name == "commit":  # map and reduce have their own bars
            self.bar.set_description_str(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.redirect is not None:
            self.redirect.__exit__(None, None, None)
            self.redirect = None


class LogProgress(_Counts, Progress):
    """One INFO line every LOG_EVERY seconds, moving or not; never a carriage return."""

    def start(self, total_bytes: int, shards: int) -> None:
        super().start(total_bytes, shards)
        self.last = time.monotonic()

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def shard_done(self) -> None:
        self.done += 1

    def reduce_start(self, partitions: int) -> None:
        self.reducing, self.partitions = True, partitions

    def partition_done(self) -> None:
        self.parts_done += 1

    def phase(self, name: str) -> None:
        log.debug("phase %s", name, extra={"event": "phase", "fields": {"phase": name}})

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_EVERY:
            self.last = now
            log.info("%s", self.text(), extra={"event": "progress", "fields": self.fields()})


def make_progress(quiet: bool) -> Progress:
    """Nothing under ``-q``; a bar on a terminal; else (and under ``--log-format json``, where
    each line is a ``progress`` event) a line every LOG_EVERY seconds."""
    from mapred.engine import logs

    if quiet:
        return Progress()
    return BarProgress() if sys.stderr.isatty() and not logs.json_mode() else LogProgress()
