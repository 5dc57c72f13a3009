"""Part files on their way into the staging directory: collected per attempt, fenced ones removed.

A reduce attempt's part file is collected (rsync from an SSH host; in place locally) into
``STAGING/.part-NNNNN.ATTEMPT.tmp`` on an I/O thread, and only the committed attempt's file is
renamed to ``part-NNNNN``. An attempt that ends otherwise (cancelled as the slower of two, failed,
its host lost) is *fenced*: a collect not yet started never runs, one in flight has its result
removed the moment it lands, and whatever such a collect left behind (an rsync temporary file of a
killed transfer) is swept before the commit, which renames the staging directory only when it
holds nothing but part files and ``_SUCCESS``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.cluster.transport import Transport
from mapred.limits import SETTLE_TIMEOUT

log = logging.getLogger("mapred")

_LEFTOVER = re.compile(r"\.+part-\d+\..*")  # our .tmp names and rsync's ".NAME.XXXXXX" temps

Post = Callable[[str, dict[str, Any]], None]


class PartFiles:
    """The collects of one run's reduce attempts (the runner's loop thread calls every method;
    the collects themselves run on ``io`` and report through ``post``)."""

    def __init__(self, staging: Path, io: ThreadPoolExecutor, post: Post) -> None:
        self.staging, self.io, self.post = staging, io, post
        self.running: dict[str, Future[None]] = {}
        self.fenced: set[str] = set()
        self.lock = threading.Lock()

    def target(self, partition: int, attempt: str) -> Path:
        return self.staging / paths.reduce_tmp_name(partition, attempt)

    def collect(self, attempt: str, transport: Transport, remote: str, partition: int,
                done: dict[str, Any]) -> None:
        """Fetch the attempt's part file in the background, then post ``done`` (or a failure)."""
        with self.lock:
            if attempt in self.fenced:
                return
            self.running[attempt] = self.io.submit(self._collect, attempt, transport, remote,
                                                   self.target(partition, attempt), done)

    def _collect(self, attempt: str, transport: Transport, remote: str, target: Path,
                 done: dict[str, Any]) -> None:
        try:
            transport.collect(remote, target)
        except Exception as e:  # noqa: BLE001 - a failure of the attempt
            self.post(attempt, {"ev": "failed", "error": f"collecting the part file failed: {e}"})
            return
        with self.lock:
            if attempt in self.fenced:  # ended while its file was on the way: not ours any more
                target.unlink(missing_ok=True)
                return
        self.post(attempt, done)

    def fence(self, attempt: str, partition: int) -> None:
        """The attempt will never commit: stop its collect if it has not started, remove its
        file now and, if a collect is in flight, when that collect ends."""
        with self.lock:
            self.fenced.add(attempt)
            fut = self.running.get(attempt)  # kept: settle() waits for it if it is running
            if fut is not None:
                fut.cancel()
            self.target(partition, attempt).unlink(missing_ok=True)

    def commit(self, attempt: str, partition: int) -> None:
        """The attempt's file becomes ``part-NNNNN``."""
        with self.lock:
            self.running.pop(attempt, None)
            os.replace(self.target(partition, attempt),
                       self.staging / paths.part_name(partition))

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Before the commit: wait for collects still running (only fenced ones can be), then
        remove what fenced attempts left in the staging directory."""
        with self.lock:
            pending = list(self.running.values())
        concurrent.futures.wait(pending, timeout=timeout)
        for name in os.listdir(self.staging):
            if _LEFTOVER.fullmatch(name):
                log.debug("removing %s, left by an attempt that did not commit", name)
                paths.remove(self.staging / name)
