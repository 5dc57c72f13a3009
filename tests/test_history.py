"""mapred.history.runs (and ``mapred runs`` / ``mapred show``): reading run directories forgivingly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from mrtest import run_mapred
from typer.testing import CliRunner

from mapred.cli import runs as cli_runs
from mapred.errors import UsageError
from mapred.history import runs as history

T0 = 1_795_800_000.0


def write_run(
    state: Path,
    run_id: str,
    plan: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    summary: dict[str, Any] | str | None = None,
    tail: bytes = b"",
) -> Path:
    """A run directory; ``summary`` given as str is written raw (to corrupt it).

    The plan's and summary's ``run_id`` are set to the directory name, as the engine does.
    """
    d = state / "runs" / run_id
    d.mkdir(parents=True)
    for record in (plan, summary):
        if isinstance(record, dict) and "run_id" in record:
            record["run_id"] = run_id
    if plan is not None:
        (d / "plan.json").write_text(json.dumps(plan))
    body = "".join(json.dumps(e) + "\n" for e in events or [])
    (d / "events.jsonl").write_bytes(body.encode() + tail)
    if isinstance(summary, str):
        (d / "summary.json").write_text(summary)
    elif summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def plan(run_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job": "jobs/wordcount.py",
        "corpus": "/data/wiki",
        "output": "/data/out",
        "argv": ["mapred", "run"],
        "started": T0,
        "reducers": 1,
        "hosts": [
            {"name": "h1", "address": "198.18.0.11", "cores": 2},
            {"name": "h2", "address": "198.18.0.12", "cores": 2},
        ],
        "shards": [
            {"task": "m00000", "path": "a.txt", "start": 0, "end": 100},
            {"task": "m00001", "path": "b.txt", "start": 0, "end": 50},
        ],
        **extra,
    }


def start(ts: float, task: str, n: int, host: str, slot: int = 0, **kw: Any) -> dict[str, Any]:
    kind = "map" if task.startswith("m") else "reduce"
    return {
        "ts": T0 + ts,
        "event": "task_start",
        "task": task,
        "kind": kind,
        "attempt": f"{task}.{n}",
        "host": host,
        "slot": slot,
        "backup": False,
        **kw,
    }


def end(ts: float, task: str, n: int, host: str, outcome: str = "ok", **kw: Any) -> dict:
    kind = "map" if task.startswith("m") else "reduce"
    return {
        "ts": T0 + ts,
        "event": "task_end",
        "task": task,
        "kind": kind,
        "attempt": f"{task}.{n}",
        "host": host,
        "slot": kw.pop("slot", 0),
        "outcome": outcome,
        "bytes_in": kw.pop("bytes_in", 100),
        "bytes_out": 10,
        "records": 5,
        "keys": 3,
        "error": None,
        **kw,
    }


EVENTS = [
    {"ts": T0, "event": "run_start"},
    {"ts": T0 + 0.1, "event": "phase", "phase": "map"},
    start(1, "m00000", 1, "h1", shard={"path": "a.txt", "start": 0, "end": 100}),
    start(1, "m00001", 1, "h2"),
    end(3, "m00000", 1, "h1", bytes_in=100),
    {"ts": T0 + 4, "event": "host_lost", "host": "h2", "reason": "link down"},
    start(4.5, "m00001", 2, "h1", slot=1),
    end(6.5, "m00001", 2, "h1", bytes_in=50, slot=1),
    {"ts": T0 + 7, "event": "phase", "phase": "reduce"},
    start(7, "r00000", 1, "h1", partition=0),
    end(9, "r00000", 1, "h1"),
]


def summary(run_id: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job": "jobs/wordcount.py",
        "corpus": "/data/wiki",
        "output": "/data/out",
        "status": status,
        "exit_code": 0 if status == "succeeded" else 1,
        "started": T0,
        "ended": T0 + 10,
        "duration": 10.0,
        "error": None,
        "counters": {
            "bytes_in": 150,
            "records_in": 10,
            "pairs": 10,
            "keys_out": 3,
            "bytes_out": 10,
            "map_tasks": 2,
            "reduce_tasks": 1,
            "retries": 1,
            "backups": 0,
            "hosts_lost": 1,
        },
        "hosts": {
            "h1": {"tasks": 3, "bytes_in": 250, "busy_seconds": 6.0},
            "h2": {"tasks": 0, "bytes_in": 0, "busy_seconds": 3.0},
        },
        **extra,
    }


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    proc.wait()
    return proc.pid


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


# --------------------------------------------------------------------------- state dir


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert history.state_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert history.state_dir(None) == tmp_path / "xdg" / "mapred"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert history.state_dir(None) == tmp_path / "home" / ".local" / "state" / "mapred"


# --------------------------------------------------------------------------- listing


def test_list_runs_newest_first_with_fields(state: Path) -> None:
    write_run(state, "20261127T100000-aaaaaa", plan("a"), EVENTS, summary("a"))
    write_run(state, "20261127T120000-bbbbbb", plan("b"), EVENTS, summary("b", "failed"))
    (state / "runs" / "stray-file.txt").write_text("not a run")
    (state / "runs" / ".20261127T130000-tmp").mkdir()
    runs = history.list_runs(state)
    assert [r.run_id for r in runs] == ["20261127T120000-bbbbbb", "20261127T100000-aaaaaa"]
    assert runs[0].status == "failed" and runs[1].status == "succeeded"
    assert (runs[1].job, runs[1].corpus, runs[1].started, runs[1].duration) == (
        "jobs/wordcount.py",
        "/data/wiki",
        T0,
        10.0,
    )
    assert [r.run_id for r in history.list_runs(state, limit=1)] == ["20261127T120000-bbbbbb"]


def test_list_runs_without_a_state_dir(state: Path) -> None:
    assert history.list_runs(state) == []


def test_an_unreadable_history_is_a_usage_error(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (state / "runs").mkdir(parents=True)

    def denied(path: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(history.os, "scandir", denied)  # root ignores chmod 0
    with pytest.raises(UsageError, match="cannot read the run history.*Permission denied"):
        history.list_runs(state)


def test_damaged_runs_are_listed_as_unknown(state: Path) -> None:
    write_run(state, "20261127T100000-corrup", plan("c"), EVENTS, summary='{"status": "succ')
    write_run(state, "20261127T110000-noplan", None, EVENTS)
    write_run(state, "20261127T120000-badpln", None, EVENTS)
    (state / "runs" / "20261127T120000-badpln" / "plan.json").write_bytes(b"\xff\xfe[1,")
    write_run(state, "20261127T130000-array", plan("d"), EVENTS, summary="[1, 2]")
    write_run(state, "20261127T140000-badsta", plan("e"), EVENTS, summary("e", "weird"))
    (state / "runs" / "20261127T150000-empty").mkdir()
    runs = history.list_runs(state)
    assert len(runs) == 6
    assert {r.status for r in runs} == {"unknown"}


def test_status_without_summary_follows_the_coordinator_pid(state: Path) -> None:
    now = time.time()
    write_run(state, "20261127T100000-crash1", plan("a", pid=dead_pid()), EVENTS)
    write_run(state, "20261127T110000-live01", plan("b", pid=os.getpid(), started=now), EVENTS)
    # our pid, but the run started long before this process: the pid was reused
    write_run(
        state, "20261127T120000-reused", plan("c", pid=os.getpid(), started=now - 864e3), EVENTS
    )
    write_run(state, "20261127T130000-nopid1", plan("d"), EVENTS)
    status = {r.run_id[-6:]: r.status for r in history.list_runs(state)}
    assert status == {
        "crash1": "crashed",
        "live01": "running",
        "reused": "crashed",
        "nopid1": "unknown",
    }
    crashed = next(r for r in history.list_runs(state) if r.run_id.endswith("crash1"))
    assert crashed.duration == pytest.approx(9.0)  # to the last event, read from the tail


# --------------------------------------------------------------------------- events


def test_truncated_event_log_ignores_the_partial_last_line(state: Path) -> None:
    d = write_run(
        state,
        "20261127T100000-trunc1",
        plan("t", pid=dead_pid()),
        EVENTS,
        tail=b'{"ts": 1795800010.0, "event": "task_end", "task": "r000',
    )
    run = history.load_run_dir(d)
    assert run.status == "crashed"
    assert len(run.events) == len(EVENTS)
    assert all("line" not in n for n in run.notes)  # a partial tail is expected, not damage
    assert [a.attempt for a in run.attempts] == ["m00000.1", "m00001.1", "m00001.2", "r00000.1"]


def test_a_complete_last_line_without_newline_is_still_dropped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"ts": 1, "event": "run_start"}\n{"ts": 2, "event": "run_end"}')
    assert [e["event"] for e in history.read_events(path)] == ["run_start"]


def test_bad_lines_in_the_middle_are_skipped_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"ts": 1, "event": "run_start"}\nnot json\n[1,2]\n{"event": "x"}\n'
        b'{"ts": "soon", "event": "x"}\n{"ts": NaN, "event": "x"}\n\xff\xfe\n\n'
        b'{"ts": 2, "event": "phase", "phase": "map"}\n'
    )
    notes: list[str] = []
    events = history.read_events(path, notes)
    assert [e["event"] for e in events] == ["run_start", "phase"]
    assert len(notes) == 6 and notes[0] == "events.jsonl line 2 is not a valid event (skipped)"


def test_attempts_pair_starts_and_ends(state: Path) -> None:
    d = write_run(state, "20261127T100000-pairs1", plan("p"), EVENTS, summary("p"))
    run = history.load_run_dir(d)
    by_id = {a.attempt: a for a in run.attempts}
    first = by_id["m00000.1"]
    assert (first.host, first.kind, first.outcome, first.duration) == ("h1", "map", "ok", 2.0)
    assert first.shard == history.Shard("a.txt", 0, 100)
    # no shard in the start event: taken from the plan
    assert by_id["m00001.2"].shard == history.Shard("b.txt", 0, 50)
    # never ended, and its host was lost afterwards: lost at that moment
    lost = by_id["m00001.1"]
    assert (lost.outcome, lost.end) == ("lost", T0 + 4)
    assert by_id["r00000.1"].partition == 0 and by_id["r00000.1"].kind == "reduce"
    assert [(m.kind, m.label) for m in run.markers] == [
        ("phase", "map"),
        ("host_lost", "link down"),
        ("phase", "reduce"),
    ]


def test_an_attempt_cut_off_by_a_crash_is_unfinished(state: Path) -> None:
    events = EVENTS[:3]  # m00000.1 started, nothing after
    d = write_run(state, "20261127T100000-cutoff", plan("c", pid=dead_pid()), events)
    (a,) = history.load_run_dir(d).attempts
    assert a.outcome == "unfinished" and a.end == a.start


def _staging(t0: float, t1: float | None = None, **how: Any) -> dict[str, Any]:
    return {"start": T0 + t0, **({"end": T0 + t1} if t1 is not None else {}), **how}


TIMED_EVENTS = [
    {"ts": T0, "event": "run_start"},
    {"ts": T0 + 0.1, "event": "worker_start", "host": "h1", "slot": 0},
    {"ts": T0 + 0.2, "event": "worker_start", "host": "h2", "slot": 0},
    {"ts": T0 + 0.2, "event": "worker_start", "host": "h2", "slot": 1},
    {"ts": T0 + 0.9, "event": "worker_ready", "host": "h1", "slot": 0},
    {"ts": T0 + 1.0, "event": "worker_ready", "host": "h2", "slot": 0},
    {"ts": T0 + 1.5, "event": "worker_ready", "host": "h1", "slot": 0},  # again: ignored
    start(2, "m00000", 1, "h1", staging=_staging(1, 2, how="sent", bytes=4096)),
    start(2.5, "m00001", 1, "h2", staging=_staging(1, 2.5, how="copied", bytes=0, peer="h1")),
    end(3, "m00000", 1, "h1", reported=T0 + 2.8),
    end(4, "m00001", 1, "h2", reported=T0 + 3.5),
    # cancelled while staging: no task_start, task_end carries the unfinished staging
    end(4.2, "m00001", 2, "h1", "killed", staging=_staging(4)),
    {"ts": T0 + 5, "event": "host_lost", "host": "h2", "reason": "link down"},
    start(6, "r00000", 1, "h1", partition=0),
    end(9, "r00000", 1, "h1", fetched={"end": T0 + 7, "bytes": 777}, reported=T0 + 8.5),
]


def test_transfers_and_worker_startups_are_read_from_the_journal(state: Path) -> None:
    d = write_run(state, "20261127T100000-timed1", plan("t"), TIMED_EVENTS, summary("t"))
    run = history.load_run_dir(d)
    by_id = {a.attempt: a for a in run.attempts}
    T = history.Transfer
    assert by_id["m00000.1"].transfers == (
        T("stage", T0 + 1, T0 + 2, "sent", 4096), T("collect", T0 + 2.8, T0 + 3))
    assert by_id["m00001.1"].staging == T("stage", T0 + 1, T0 + 2.5, "copied", 0, "h1")
    killed = by_id["m00001.2"]  # its staging lasts until it ended; it never computed
    assert killed.transfers == (T("stage", T0 + 4, T0 + 4.2),) and killed.duration == 0
    assert by_id["r00000.1"].transfers == (
        T("fetch", T0 + 6, T0 + 7, nbytes=777), T("collect", T0 + 8.5, T0 + 9))
    S = history.Startup
    assert run.startups == (
        S("h1", 0, T0 + 0.1, T0 + 0.9, True),
        S("h2", 0, T0 + 0.2, T0 + 1.0, True),
        S("h2", 1, T0 + 0.2, T0 + 5, False),  # never ready: until its host was lost
    )


def test_journals_without_transfers_or_startups_load_as_before(state: Path) -> None:
    d = write_run(state, "20261127T100000-old001", plan("o"), EVENTS, summary("o"))
    run = history.load_run_dir(d)
    assert all(a.transfers == () and a.staging is None for a in run.attempts)
    assert run.startups == () and run.detail is None and run.notes == ()


def test_wrongly_typed_transfer_fields_do_not_crash(state: Path) -> None:
    events = [
        start(1, "m00000", 1, "h1", staging="fast"),
        end(2, "m00000", 1, "h1", fetched={"end": "soon"}, reported="later"),
        start(3, "m00001", 1, "h1", staging={"start": T0 + 9, "end": [], "how": 5, "peer": {}}),
        end(4, "m00001", 1, "h1", fetched=[1], detail=["not", "text"]),
        {"ts": T0, "event": "worker_start", "host": 3, "slot": "0"},
        {"ts": T0, "event": "worker_ready", "slot": 10**30},
    ]
    run = history.load_run_dir(write_run(state, "20261127T100000-types2", plan("x"), events))
    first, second = run.attempts
    assert first.transfers == () and second.detail is None
    # a start after the worker got the task is clamped to it
    assert second.transfers == (history.Transfer("stage", T0 + 3, T0 + 3),)
    assert run.startups == ()


def test_a_failed_runs_traceback_is_read_from_the_summary(state: Path) -> None:
    tb = 'Traceback (most recent call last):\n  File "job.py", line 3\nValueError: bad'
    d = write_run(state, "20261127T100000-failed", plan("f"), EVENTS,
                  summary("f", "failed", error="map task m00000 failed", detail=tb))
    run = history.load_run_dir(d)
    assert (run.error, run.detail) == ("map task m00000 failed", tb)


# --------------------------------------------------------------------------- load_run


def test_load_run_by_exact_id_and_unique_prefix(state: Path) -> None:
    write_run(state, "20261127T100000-abc", plan("1"), EVENTS, summary("1"))
    write_run(state, "20261127T100000-abcd", plan("2"), EVENTS, summary("2"))
    write_run(state, "20261128T090000-ffffff", plan("3"), EVENTS, summary("3"))
    assert history.load_run(state, "20261127T100000-abc").path.name == "20261127T100000-abc"
    assert history.load_run(state, "20261127T100000-abcd").path.name == "20261127T100000-abcd"
    assert history.load_run(state, "20261128").path.name == "20261128T090000-ffffff"


def test_load_run_ambiguous_or_unknown_prefix_names_it(state: Path) -> None:
    write_run(state, "20261127T100000-aaaaaa", plan("1"), EVENTS)
    write_run(state, "20261127T110000-bbbbbb", plan("2"), EVENTS)
    with pytest.raises(UsageError, match=r"run id '20261127' is ambiguous: 2 runs match") as err:
        history.load_run(state, "20261127")
    assert "20261127T100000-aaaaaa" in str(err.value) and "T110000-bbbbbb" in str(err.value)
    with pytest.raises(UsageError, match=r"'0000-' is ambiguous: 2 runs match it: "
                       r"20261127T110000-bbbbbb, 20261127T100000-aaaaaa \(give more"):
        history.load_run(state, "0000-")  # inside both ids, at the start of neither
    with pytest.raises(UsageError, match=r"no run matches '1999'"):
        history.load_run(state, "1999")
    with pytest.raises(UsageError, match="no run matches ''"):
        history.load_run(state, "")
    with pytest.raises(UsageError, match="does not exist"):
        history.load_run(state, "../no-such-run-dir")
    with pytest.raises(UsageError, match="is not a run directory"):
        history.load_run(state, str(state))


def test_load_run_by_any_part_of_its_id(state: Path) -> None:
    write_run(state, "20261127T100000-a1b2c3", plan("1"), EVENTS, summary("1"))
    write_run(state, "20261128T093000-ffffff", plan("2"), EVENTS, summary("2"))
    write_run(state, "20251201T120000-202611", plan("3"), EVENTS, summary("3"))
    for part, run_id in (("a1b2", "20261127T100000-a1b2c3"), ("b2c3", "20261127T100000-a1b2c3"),
                         ("T0930", "20261128T093000-ffffff"), ("1128T09", "20261128T093000-ffffff"),
                         ("ffffff", "20261128T093000-ffffff"), ("1201", "20251201T120000-202611"),
                         # inside the third id too, but the start of only the first two's:
                         ("2026112", None), ("202611", None), ("20261127", "20261127T100000-a1b2c3")):
        if run_id is None:
            with pytest.raises(UsageError, match="ambiguous"):
                history.load_run(state, part)
        else:
            assert history.load_run(state, part).path.name == run_id, part


def test_a_part_that_starts_one_id_wins_over_ids_that_contain_it(state: Path) -> None:
    write_run(state, "20261127T100000-aaaaaa", plan("1"), EVENTS)
    write_run(state, "20251201T100000-202611", plan("2"), EVENTS)
    assert history.load_run(state, "202611").path.name == "20261127T100000-aaaaaa"


def test_show_with_an_ambiguous_part_exits_2_listing_the_runs(state: Path) -> None:
    for run_id in ("20261127T100000-aaaaaa", "20261127T110000-bbbbbb", "20261128T090000-cccccc"):
        write_run(state, run_id, plan("x"), EVENTS, summary("x"))
    for command in ("show", "report"):
        proc = run_mapred(command, "T1", "--state-dir", state, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        assert err.strip().splitlines() == [
            "mapred: error: run id 'T1' is ambiguous: 2 runs match it: 20261127T110000-bbbbbb, "
            "20261127T100000-aaaaaa (give more of the id)"], err
    assert run_mapred("show", "bbb", "--state-dir", state).stdout.decode().startswith(
        "run       20261127T110000-bbbbbb")


def test_load_run_by_directory_path(state: Path) -> None:
    d = write_run(state, "20261127T100000-aaaaaa", plan("1"), EVENTS, summary("1"))
    assert history.load_run(Path("/nonexistent"), str(d)).run_id == "20261127T100000-aaaaaa"


def test_a_run_id_differing_from_its_directory_is_noted(state: Path) -> None:
    d = write_run(state, "20261127T100000-aaaaaa", plan("x"), EVENTS)
    (d / "plan.json").write_text(json.dumps(plan("20261127T090000-other")))
    run = history.load_run_dir(d)
    assert run.run_id == "20261127T100000-aaaaaa"
    assert any("'20261127T090000-other'" in n for n in run.notes)


def test_summary_figures_win_when_present(state: Path) -> None:
    d = write_run(state, "20261127T100000-summ01", plan("s"), EVENTS, summary("s"))
    run = history.load_run_dir(d)
    assert run.status == "succeeded" and run.exit_code == 0 and run.duration == 10.0
    assert not run.counters_derived and run.counters["bytes_in"] == 150
    h1 = run.hosts[0]
    assert (h1.name, h1.address, h1.cores, h1.tasks, h1.bytes_in, h1.busy_seconds) == (
        "h1",
        "198.18.0.11",
        2,
        3,
        250,
        6.0,
    )
    assert run.notes == ()


def test_per_host_figures_derived_from_events_without_summary(state: Path) -> None:
    d = write_run(state, "20261127T100000-derive", plan("d", pid=dead_pid()), EVENTS)
    run = history.load_run_dir(d)
    assert run.counters_derived
    h1, h2 = run.hosts
    assert (h1.tasks, h1.attempts, h1.bytes_in, h1.busy_seconds, h1.slots) == (3, 3, 250, 6.0, 2)
    assert h1.throughput == pytest.approx(250 / 6)
    assert (h2.tasks, h2.attempts, h2.failed, h2.busy_seconds, h2.lost) == (
        0,
        1,
        1,
        3.0,
        "link down",
    )
    assert run.counters == {
        "bytes_in": 150,
        "records_in": 10,
        "keys_out": 3,
        "bytes_out": 10,
        "map_tasks": 2,
        "reduce_tasks": 1,
        "retries": 1,
        "backups": 0,
        "hosts_lost": 1,
    }
    assert run.duration == 9.0  # to the last event
    assert any("summary.json is missing" in n for n in run.notes)


def test_corrupt_summary_loads_with_a_note(state: Path) -> None:
    d = write_run(state, "20261127T100000-corrup", plan("c"), EVENTS, summary="{nope")
    run = history.load_run_dir(d)
    assert run.status == "unknown"
    assert any(n.startswith("summary.json is corrupt") for n in run.notes)
    assert len(run.attempts) == 4 and run.counters_derived


def test_wrongly_typed_fields_do_not_crash(state: Path) -> None:
    bad_plan = {
        "run_id": 7,
        "job": ["x"],
        "started": "yesterday",
        "hosts": [1, {"name": 2}],
        "shards": "all",
        "argv": "mapred run",
        "pid": "12",
    }
    events = [
        {
            "ts": T0,
            "event": "task_start",
            "task": None,
            "slot": "0",
            "backup": "yes",
            "shard": {"path": 5},
        },
        {
            "ts": T0 + 1,
            "event": "task_end",
            "attempt": 3,
            "outcome": "exploded",
            "bytes_in": "lots",
            "error": {"x": 1},
        },
    ]
    bad_summary = {
        "status": "failed",
        "counters": {"bytes_in": "many", "x": float("inf")},
        "hosts": {"h": "busy"},
        "ended": None,
        "exit_code": True,
    }
    d = write_run(
        state,
        "20261127T100000-types1",
        bad_plan,
        events,
        summary=json.dumps(bad_summary).replace("Infinity", "1e999"),
    )
    run = history.load_run_dir(d)
    assert run.status == "failed" and run.exit_code is None
    assert [r.status for r in history.list_runs(state)] == ["failed"]


def test_display_text_makes_names_safe_to_show() -> None:
    assert history.display_text("caf\udce9.txt") == "caf\\xe9.txt"
    assert history.display_text("a\x1b[31mred") == "a\\x1b[31mred"
    assert history.display_text("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert history.display_text("lone \ud800 surrogate").encode("utf-8")
    assert history.display_text("ünïcode ok") == "ünïcode ok"


# --------------------------------------------------------------------------- mapred runs / show


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_runs.register(app)
    return app


def test_runs_command_table(state: Path) -> None:
    write_run(state, "20261127T100000-aaaaaa", plan("a"), EVENTS, summary("a"))
    write_run(state, "20261127T110000-bbbbbb", plan("b", pid=dead_pid()), EVENTS)
    result = CliRunner().invoke(_app(), ["runs", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["RUN", "ID", "JOB", "CORPUS", "STARTED", "DURATION", "STATUS"]
    assert lines[1].startswith("20261127T110000-bbbbbb") and lines[1].endswith("crashed")
    assert lines[2].endswith("succeeded") and "10.0 s" in lines[2]
    result = CliRunner().invoke(_app(), ["runs", "-n", "1", "--state-dir", str(state)])
    assert len(result.stdout.splitlines()) == 2
    assert "(1 older run not shown; --limit 0 shows all)" in result.output


def test_runs_command_with_no_runs(state: Path) -> None:
    result = CliRunner().invoke(_app(), ["runs", "--state-dir", str(state)])
    assert result.exit_code == 0 and "no runs recorded" in result.output


def test_runs_table_fits_a_narrow_terminal() -> None:
    info = history.RunInfo(
        "20261127T100000-aaaaaa",
        Path("x"),
        "jobs/" + "j" * 50 + ".py",
        "/very/long/corpus/" + "c" * 80,
        T0,
        12.0,
        "succeeded",
    )
    table = cli_runs.format_runs_table([info], width=100)
    assert all(len(line) <= 100 for line in table.splitlines())
    assert "…" in table and table.splitlines()[1].endswith("succeeded")


def test_show_fits_80_columns(state: Path) -> None:
    long = "/srv/" + "very-long-directory-name/" * 6 + "corpus"
    d = write_run(
        state,
        "20261127T100000-aaaaaa",
        plan("a", corpus=long),
        EVENTS,
        summary(
            "a",
            "failed",
            corpus=long,
            error="TaskError: m00003 failed on h1: "
            + "ValueError: bad record " * 12
            + "\nTraceback line two",
        ),
    )
    hosts = json.loads((d / "plan.json").read_text())
    hosts["hosts"][1]["name"] = "a-host-name-that-is-much-too-long-for-the-column"
    (d / "plan.json").write_text(json.dumps(hosts))
    result = CliRunner().invoke(_app(), ["show", "2026", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.output
    assert "status    failed (exit 1)" in text and "error     TaskError" in text
    assert "  h2 lost: link down" in text and "bytes in" in text and "h1" in text
    assert "a-host-name-th…" in text


def test_show_unknown_run_is_a_usage_error(state: Path) -> None:
    write_run(state, "20261127T100000-aaaaaa", plan("a"), EVENTS)
    result = CliRunner().invoke(_app(), ["show", "nope", "--state-dir", str(state)])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
