"""``--resume``: continue a run whose coordinator died, reusing its committed map tasks.

Every run records in ``plan.json`` a fingerprint of what its map outputs depend on — the job
module's bytes, the parameters, reducer count, seed and shard size — and, per shard, its pieces
with each file's size and modification time; each committed map attempt's ``task_end`` event
records where its outputs are. A resumed run finds the newest unfinished run that wrote the same
output, refuses to mix in its work if the job fingerprint changed, and reuses exactly the committed
map tasks whose shard (file, byte range, size, mtime) is unchanged and whose output files are
still there. Everything else runs again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.cluster.transport import Transport
from mapred.engine.journal import journal_sums
from mapred.errors import MapredError, UsageError
from mapred.jobfiles import JobFiles
from mapred.shards import Shard

log = logging.getLogger("mapred")


@dataclass(frozen=True)
class Previous:
    run_id: str
    run_dir: Path
    plan: dict[str, Any]
    reusable: dict[str, tuple[str, dict[int, list[str]]]]  # shard key -> (host, outputs)


def job_fingerprint(job: JobFiles, params: dict[str, str], reducers: int, seed: int,
                    shard_size: int) -> dict[str, Any]:
    return {"job_sha256": dict(job.files)[job.main], "job_modules": job.digest,
            "params": params, "reducers": reducers, "seed": seed, "shard_size": shard_size}


def shard_key(shard: Shard) -> str:
    """What a map task's output depends on, besides the job: its pieces and their files (and,
    for a file reached through a symlink, the real file: a link pointed elsewhere is new input)."""
    return json.dumps([[p.file.rel, p.start, p.end, p.file.size, p.file.mtime_ns, p.file.gzip,
                        *([str(p.file.path)] if p.file.via_link else [])]
                       for p in shard.pieces])


def find_previous(state: Path, output: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest run for ``output`` that did not succeed, with its plan."""
    runs = paths.run_dir(state, "x").parent
    if not runs.is_dir():
        return None
    target = str(output.resolve())
    for run_dir in sorted(runs.iterdir(), reverse=True):
        try:
            plan = json.loads((run_dir / "plan.json").read_text())
        except (OSError, ValueError):
            continue
        if plan.get("output_abs") != target:
            continue
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
        if summary.get("status") == "succeeded":
            return None  # the last run for this output finished: nothing to resume
        return run_dir, plan
    return None


def check_compatible(plan: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    old = plan.get("fingerprint") or {}
    for key, what in (("job_sha256", "the job module's code"),
                      ("job_modules", "the modules the job imports"), ("params", "the -p parameters"),
                      ("reducers", "the number of reducers"), ("seed", "the partition seed")):
        if key == "job_modules" and key not in old:
            continue  # a run of an older mapred: its job module's hash says enough
        if old.get(key) != fingerprint[key]:
            raise UsageError(
                f"cannot resume run {plan.get('run_id')}: {what} changed since it ran "
                "(run again without --resume)")


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's events; a line cut short by the crash is skipped."""
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def committed_maps(run_dir: Path) -> dict[str, tuple[str, dict[int, list[str]]]]:
    """task -> (host, outputs) for every committed map attempt in the journal."""
    out: dict[str, tuple[str, dict[int, list[str]]]] = {}
    for ev in _events(run_dir):
        if ev.get("event") == "task_end" and ev.get("kind") == "map" and \
                ev.get("outcome") == "ok" and "outputs" in ev:
            out[ev["task"]] = (ev["host"], {int(p): v for p, v in ev["outputs"].items()})
    return out


def load(state: Path, output: Path, fingerprint: dict[str, Any]) -> Previous | None:
    found = find_previous(state, output)
    if found is None:
        return None
    run_dir, plan = found
    check_compatible(plan, fingerprint)
    keys = {s["task"]: s.get("key") for s in plan.get("shards", [])}
    reusable = {}
    for task, (host, outputs) in committed_maps(run_dir).items():
        key = keys.get(task)
        if key and all(Path(p).is_file() for runs in outputs.values() for p in runs):
            reusable[key] = (host, outputs)
    return Previous(plan.get("run_id", run_dir.name), run_dir, plan, reusable)


def scratch_dirs(run_dir: Path) -> dict[str, str]:
    """host -> scratch directory of a run, from its journal."""
    return {ev["host"]: ev["path"] for ev in _events(run_dir)
            if ev.get("event") == "host_scratch"}


# --- what hosts kept for earlier runs (the runner calls these) ------------------------------

Reuse = dict[str, tuple[str, dict[int, list[str]]]]  # shard key -> (host, outputs)


def adopt_kept(prev: Previous, transports: dict[str, Transport], lost: Collection[str]) -> Reuse:
    """shard key -> (host, outputs) for the map outputs hosts kept for ``prev``.

    Each host moves what it kept into this run's scratch; a task is reused only if every
    one of its files is there with the size and sha256 it was committed with."""
    committed = committed_maps(prev.run_dir)
    old_scratch = scratch_dirs(prev.run_dir)
    keys = {s["task"]: s.get("key") for s in prev.plan.get("shards", [])}
    want = journal_sums(prev.run_dir)
    out: Reuse = {}
    for host, t in transports.items():
        if host in lost or host not in old_scratch:
            continue
        try:
            adopted = _adopted(t, prev.run_id, old_scratch[host])
        except MapredError as e:
            log.warning("host %s: cannot reuse the map outputs it kept: %s", host, e)
            continue
        if adopted is None:
            continue  # it keeps nothing (local): its files were checked in place
        moved, found = adopted
        for task, (h, outputs) in committed.items():
            runs = [p for ps in outputs.values() for p in ps]
            if h == host and keys.get(task) and all(
                    p in moved and p in want and tuple(want[p]) == found.get(moved[p])
                    for p in runs):
                out[str(keys[task])] = (host, {part: [moved[p] for p in ps]
                                               for part, ps in outputs.items()})
    return out


def _adopted(t: Transport, run_id: str, old_scratch: str) -> \
        tuple[dict[str, str], dict[str, tuple[int, str]]] | None:
    """(old path -> new path, new path -> (size, sha256)) of what ``t`` kept for ``run_id``;
    None if it keeps nothing."""
    root, files = t.adopt(run_id)
    if not root:
        return None
    old_map = old_scratch.rstrip("/") + "/map/"
    moved = {old_map + rel: f"{root}/{rel}" for rel in files}
    return moved, t.checksums(list(moved.values())) if moved else {}


def forget_superseded(superseded: Path | None, transports: dict[str, Transport],
                      lost: Collection[str]) -> None:
    """After a success, remove the scratch an earlier unfinished run left for --resume."""
    if superseded is None:
        return
    for host in scratch_dirs(superseded):
        t = transports.get(host)
        if t is not None and host not in lost:
            t.forget_runs([superseded.name])


def forget_abandoned(state: Path, previous: Previous | None,
                     transports: dict[str, Transport], lost: Collection[str]) -> None:
    """Drop map outputs hosts kept for runs that can no longer be resumed: runs of this state
    dir that succeeded, or that a later run on the same output superseded."""
    for t in transports.values():
        if t.name in lost:
            continue
        garbage = [r for r in t.kept_runs if _abandoned(state, previous, r)]
        if garbage:
            t.forget_runs(garbage)


def _abandoned(state: Path, previous: Previous | None, run_id: str) -> bool:
    if previous is not None and run_id == previous.run_id:
        return False
    run_dir = paths.run_dir(state, run_id)
    try:
        plan = json.loads((run_dir / "plan.json").read_text())
    except (OSError, ValueError):
        return False  # not a run of this state dir: only its age removes it
    found = find_previous(state, Path(plan.get("output_abs", "")))
    return found is None or found[0].name != run_id
