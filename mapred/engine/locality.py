"""Where map inputs already are before they are staged: shard digests remembered between runs.

SSH hosts cache shards under the sha256 of their bytes (``WORKDIR/cache/<digest>``) and list that
cache when a run starts. To start a map task on a host holding its shard, the coordinator needs the
shard's digest before staging it. Hashing the whole corpus while planning would hold every run, the
first one too, for a full read of the corpus before its first map task (about a second per GB at
sha256 speed, longer from a cold disk: see docs/architecture.md). Instead the digests computed while
staging are remembered in the state dir (:func:`mapred.paths.digest_hints`), keyed by what names a
shard's bytes without reading them (:func:`mapred.cluster.ssh.shards.shard_key`: real path, size, mtime_ns and
range of each piece); a rerun on an unchanged corpus reads them back and knows at once which host
holds which shard. A first run places its tasks as before.

A remembered digest only steers placement; data never relies on it: staging still hashes the bytes
it sends or finds cached, so a file changed with its size and mtime kept costs a transfer, not a
wrong result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mapred.cluster.ssh.shards import known_digest, shard_key
from mapred.cluster.transport import Transport
from mapred.errors import MapredError
from mapred.limits import CACHE_MAX_AGE
from mapred.shards import Shard

log = logging.getLogger("mapred")

# a host evicts a cached shard unused this long: a digest not staged for as long names nothing there
HINT_MAX_AGE = CACHE_MAX_AGE
FORMAT = 1


def hint_key(shard: Shard) -> str:
    return hashlib.sha256(json.dumps(shard_key(shard)).encode()).hexdigest()[:32]


class DigestHints:
    """The digests remembered in ``path`` (read on first use), and saving this run's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._old: dict[str, list[Any]] | None = None

    def _load(self) -> dict[str, list[Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: it is only a hint
        entries = data.get("digests") if isinstance(data, dict) and \
            data.get("format") == FORMAT else None
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 2
                and isinstance(v[0], str) and isinstance(v[1], int | float)}

    def digest(self, shard: Shard) -> str | None:
        """The shard's digest as computed by this process, else as remembered, else None."""
        known = known_digest(shard)
        if known is not None:
            return known
        if self._old is None:
            self._old = self._load()
        entry = self._old.get(hint_key(shard))
        return str(entry[0]) if entry else None

    def held(self, shards: Iterable[Shard],
             transports: Iterable[Transport]) -> dict[str, frozenset[str]]:
        """host -> the map tasks whose shard that host's cache holds, for the SSH hosts among
        ``transports`` (a local host reads its input in place: nothing to place)."""
        digests = {s.task: d for s in shards if (d := self.digest(s)) is not None}
        out: dict[str, frozenset[str]] = {}
        for t in transports:
            try:
                have = t.holds(set(digests.values()))
            except MapredError:  # lost meanwhile: its watch says so
                continue
            tasks = frozenset(task for task, d in digests.items() if d in have)
            if tasks:
                out[t.name] = tasks
        return out

    def save(self, shards: Iterable[Shard]) -> None:
        """Remember the digests this process computed (merged into the file as it is now: runs
        sharing the state dir may save at the same time, the last one wins; nothing is lost
        but a hint). Never raises."""
        fresh = {hint_key(s): d for s in shards if (d := known_digest(s)) is not None}
        if not fresh:
            return
        now = time.time()
        entries = self._load()
        entries.update({k: [d, now] for k, d in fresh.items()})
        entries = {k: v for k, v in entries.items() if now - v[1] < HINT_MAX_AGE}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".digests-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": FORMAT, "digests": entries}, f, separators=(",", ":"))
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            log.debug("cannot remember shard digests in %s: %s", self.path, e)
