"""Shard digests remembered between runs, and which hosts hold which map task's input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mapred.cluster.ssh import shards as staging
from mapred.engine import locality
from mapred.shards import Shard, list_inputs, plan


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts like a new run: nothing hashed by this process yet."""
    monkeypatch.setattr(staging, "_DIGESTS", {})


def corpus(tmp_path: Path) -> list[Shard]:
    root = tmp_path / "corpus"
    if root.exists():  # planned again, as a rerun does
        return plan(list_inputs(root), 1024)
    root.mkdir()
    (root / "a.txt").write_bytes(b"alpha beta\n" * 300)
    (root / "b.txt").write_bytes(b"gamma\n" * 400)
    return plan(list_inputs(root), 1024)


class FakeRemote:
    def __init__(self, name: str, cache: set[str]) -> None:
        self.name, self.cache = name, cache

    def watch(self, on_lost: object) -> None: ...

    def holds(self, digests: set[str]) -> set[str]:
        return digests & self.cache


class FakeLocal:
    name = "local"

    def holds(self, digests: set[str]) -> set[str]:
        return set()  # as LocalTransport: no shard cache


def test_digests_computed_in_one_run_are_known_to_the_next(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    shards = corpus(tmp_path)
    path = tmp_path / "state" / "digests.json"
    digests = [staging.shard_digest(s) for s in shards[:2]]  # staged: hashed
    locality.DigestHints(path).save(shards)
    monkeypatch.setattr(staging, "_DIGESTS", {})  # the next run
    hints = locality.DigestHints(path)
    assert [hints.digest(s) for s in shards] == [*digests, *[None] * (len(shards) - 2)]
    assert not [p.name for p in path.parent.iterdir() if p.name != "digests.json"]


def test_a_changed_file_has_no_remembered_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shards = corpus(tmp_path)
    path = tmp_path / "digests.json"
    for s in shards:
        staging.shard_digest(s)
    locality.DigestHints(path).save(shards)
    monkeypatch.setattr(staging, "_DIGESTS", {})
    a = tmp_path / "corpus" / "a.txt"
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    again = corpus(tmp_path)
    hints = locality.DigestHints(path)
    known = {s.task for s in again if hints.digest(s) is not None}
    unchanged = {s.task for s in again if all(p.file.rel == "b.txt" for p in s.pieces)}
    assert unchanged and known == unchanged


def test_held_maps_the_hosts_caches_to_tasks(tmp_path: Path):
    shards = corpus(tmp_path)
    d = {s.task: staging.shard_digest(s) for s in shards}
    first, last = shards[0].task, shards[-1].task
    hosts = [FakeRemote("h1", {d[first], "other"}), FakeRemote("h2", {d[first], d[last]}),
             FakeRemote("h3", set()), FakeLocal()]
    held = locality.DigestHints(tmp_path / "digests.json").held(shards, hosts)  # type: ignore[arg-type]
    assert held == {"h1": frozenset({first}), "h2": frozenset({first, last})}
    assert locality.DigestHints(tmp_path / "x.json").held(shards, [FakeLocal()]) == {}  # type: ignore[list-item]


def test_unreadable_or_old_hints_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shards = corpus(tmp_path)
    path = tmp_path / "digests.json"
    path.write_text("{not json")
    hints = locality.DigestHints(path)
    assert hints.digest(shards[0]) is None
    staging.shard_digest(shards[0])
    hints.save(shards)  # replaces the damaged file
    key = locality.hint_key(shards[0])
    data = json.loads(path.read_text())
    assert list(data["digests"]) == [key]
    data["digests"]["stale"] = ["0" * 64, time.time() - locality.HINT_MAX_AGE - 1]
    path.write_text(json.dumps(data))
    staging.shard_digest(shards[1])
    locality.DigestHints(path).save(shards)
    assert sorted(json.loads(path.read_text())["digests"]) == sorted(
        [key, locality.hint_key(shards[1])])
