"""mapred.history.report (and ``mapred report``): escaping, structure, and a real headless Chromium load.

The Chromium tests drive Debian's ``chromium`` over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: fds 3 and 4, NUL-delimited JSON), so they need no Python
dependency and open no port. They skip when chromium is missing, unless ``CI`` is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sysdeps
import typer
from mrtest import run_mapred
from typer.testing import CliRunner

from mapred.cli import runs as cli_runs
from mapred.errors import UsageError
from mapred.history import report
from mapred.history.report import render_report
from mapred.history.runs import load_run, load_run_dir

REPO = Path(__file__).resolve().parent.parent
RUN_ID = "20261127T181500-3f9a2c"
T0 = 1_795_800_000.0
HOSTILE_FILE = (
    '<img src=x onerror="window.__pwned=1">\'&<script>window.__pwned=2</script>\udcff.txt'
)
HOSTILE_ERROR = "ValueError: bad record </pre><script>window.__pwned=3</script>\u202egnp.exe"


# --------------------------------------------------------------------------- synthetic runs


def write_run(
    state: Path,
    run_id: str,
    plan: dict[str, Any] | None,
    events: list[dict[str, Any]],
    summary: dict[str, Any] | None = None,
    tail: bytes = b"",
) -> Path:
    """A run directory as the engine writes it; ``tail`` is appended raw (a partial line)."""
    d = state / "runs" / run_id
    d.mkdir(parents=True)
    if plan is not None:
        (d / "plan.json").write_text(json.dumps(plan))
    lines = "".join(json.dumps(e) + "\n" for e in events)
    (d / "events.jsonl").write_bytes(lines.encode() + tail)
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def simulate(seed: int = 7, hostile: bool = True) -> tuple[dict, list[dict], dict]:
    """(plan, events, summary) of a plausible run: 3 hosts, a failure and retry, a host lost
    mid-map (its attempts lost and retried), a straggler beaten by a backup, 4 reducers."""
    rng = random.Random(seed)
    hosts = [
        ("h1", "198.18.0.11", 8, 9e6),
        ("h2", "198.18.0.12", 4, 7e6),
        ("h3", "198.18.0.13", 6, 5e6),
    ]
    files = [f"wiki/enwiki-part-{i:03d}.txt" for i in range(6)]
    if hostile:
        files.append(HOSTILE_FILE)
    shards, chunk = [], 24 << 20
    for f in files:
        size = rng.randint(40, 110) << 20
        for start in range(0, size, chunk):
            shards.append(
                {
                    "task": f"m{len(shards):05d}",
                    "path": f,
                    "start": start,
                    "end": min(size, start + chunk),
                }
            )
    lost_at, failing, straggler = T0 + 6.0, "m00005", "m00021"
    events: list[tuple[float, int, dict]] = []
    seq = iter(range(10**9))

    def emit(ts: float, **e: Any) -> None:
        events.append((ts, next(seq), {"ts": ts, **e}))

    emit(T0, event="run_start")
    emit(T0 + 0.05, event="phase", phase="map")
    free = {(h[0], s): T0 + 0.3 for h in hosts for s in range(h[2])}
    speed = {h[0]: h[3] for h in hosts}
    pending = [(T0 + 0.3, s, 1) for s in shards]
    tries: dict[str, int] = {}
    ends: dict[str, tuple[float, str, int]] = {}

    def start_end(
        task: str,
        kind: str,
        host: str,
        slot: int,
        n: int,
        t: float,
        dur: float,
        outcome: str,
        extra: dict,
        size: int,
        backup: bool = False,
        error: str | None = None,
    ) -> None:
        attempt = f"{task}.{n}"
        emit(
            t,
            event="task_start",
            task=task,
            kind=kind,
            attempt=attempt,
            host=host,
            slot=slot,
            backup=backup,
            **extra,
        )
        done = outcome == "ok"
        emit(
            t + dur,
            event="task_end",
            task=task,
            kind=kind,
            attempt=attempt,
            host=host,
            slot=slot,
            outcome=outcome,
            bytes_in=size if done else 0,
            bytes_out=size // 9 if done else 0,
            records=size // 80 if done else 0,
            keys=size // 900 if done else 0,
            error=error,
        )

    while pending:
        pending.sort(key=lambda p: (p[0], p[1]["task"]))
        ready, shard, n = pending.pop(0)
        live = {k: v for k, v in free.items() if not (k[0] == "h2" and v >= lost_at)}
        (host, slot), t = min(live.items(), key=lambda kv: (kv[1], kv[0]))
        t = max(t, ready)
        size = shard["end"] - shard["start"]
        dur = size / speed[host] * rng.uniform(0.8, 1.25)
        if shard["task"] == straggler:
            dur *= 4.5
        extra = {"shard": {k: shard[k] for k in ("path", "start", "end")}}
        task = shard["task"]
        tries[task] = n
        if task == failing and n == 1:
            start_end(
                task,
                "map",
                host,
                slot,
                n,
                t,
                dur * 0.4,
                "failed",
                extra,
                size,
                error=HOSTILE_ERROR if hostile else "ValueError: bad record",
            )
            free[(host, slot)] = t + dur * 0.4
            pending.append((t + dur * 0.4 + 0.2, shard, n + 1))
        elif host == "h2" and t + dur > lost_at:
            start_end(task, "map", host, slot, n, t, lost_at - t, "lost", extra, size)
            free[(host, slot)] = lost_at
            pending.append((lost_at + 0.5, shard, n + 1))
        else:
            ends[task] = (t + dur, host, slot)
            free[(host, slot)] = t + dur
            if task != straggler:
                start_end(task, "map", host, slot, n, t, dur, "ok", extra, size)
            else:
                straggle = (t, dur, host, slot, n, extra, size)
    emit(lost_at, event="host_lost", host="h2", reason="ssh: keepalive timeout after 15 s")
    # The straggler: a backup on the first idle h1 slot wins; the original is killed.
    t, dur, host, slot, n, extra, size = straggle
    (bhost, bslot), bt = min(
        ((k, v) for k, v in free.items() if k[0] == "h1"), key=lambda kv: kv[1]
    )
    bdur = size / speed["h1"]
    start_end(straggler, "map", bhost, bslot, n + 1, bt, bdur, "ok", extra, size, backup=True)
    start_end(straggler, "map", host, slot, n, t, bt + bdur - t, "killed", extra, size)
    free[(bhost, bslot)] = free[(host, slot)] = bt + bdur
    map_end = max(v for k, v in free.items() if k[0] != "h2") + 0.2
    emit(map_end, event="phase", phase="reduce")
    for r in range(4):
        host, slot = ("h1", r) if r < 2 else ("h3", r - 2)
        rdur = rng.uniform(1.5, 3.0)
        start_end(
            f"r{r:05d}",
            "reduce",
            host,
            slot,
            1,
            map_end + 0.1,
            rdur,
            "ok",
            {"partition": r},
            30 << 20,
        )
    end = max(e[0] for e in events) + 0.3
    emit(end - 0.2, event="phase", phase="commit")
    emit(end, event="run_end", status="succeeded", exit_code=0)
    ordered = [e for _, _, e in sorted(events, key=lambda x: (x[0], x[1]))]
    plan = {
        "run_id": RUN_ID,
        "job": "jobs/wordcount.py",
        "corpus": "/srv/corpora/wiki",
        "output": "/srv/out/wc",
        "argv": ["mapred", "run", "jobs/wordcount.py", "/srv/corpora/wiki", "-o", "/srv/out/wc"],
        "started": T0,
        "reducers": 4,
        "pid": 999_999_999,
        "hosts": [{"name": h[0], "address": h[1], "cores": h[2]} for h in hosts],
        "shards": shards,
    }
    summary = _summary(plan, ordered, end)
    return plan, ordered, summary


def _summary(plan: dict, events: list[dict], end: float) -> dict:
    ok = [e for e in events if e["event"] == "task_end" and e["outcome"] == "ok"]
    ends = [e for e in events if e["event"] == "task_end"]
    starts = {e["attempt"]: e["ts"] for e in events if e["event"] == "task_start"}
    hosts = {}
    for h in plan["hosts"]:
        mine = [e for e in ends if e["host"] == h["name"]]
        hosts[h["name"]] = {
            "tasks": sum(e["outcome"] == "ok" for e in mine),
            "bytes_in": sum(e["bytes_in"] for e in mine),
            "busy_seconds": round(sum(e["ts"] - starts[e["attempt"]] for e in mine), 3),
        }
    maps = [e for e in ok if e["kind"] == "map"]
    reds = [e for e in ok if e["kind"] == "reduce"]
    return {
        "run_id": plan["run_id"],
        "job": plan["job"],
        "corpus": plan["corpus"],
        "output": plan["output"],
        "status": "succeeded",
        "exit_code": 0,
        "started": plan["started"],
        "ended": end,
        "duration": end - plan["started"],
        "error": None,
        "counters": {
            "bytes_in": sum(e["bytes_in"] for e in maps),
            "records_in": sum(e["records"] for e in maps),
            "pairs": sum(e["records"] for e in maps) * 9,
            "keys_out": sum(e["keys"] for e in reds),
            "bytes_out": sum(e["bytes_out"] for e in reds),
            "map_tasks": len(plan["shards"]),
            "reduce_tasks": 4,
            "retries": sum(e["outcome"] in ("failed", "lost") for e in ends),
            "backups": sum(1 for e in events if e.get("backup") is True),
            "hosts_lost": 1,
        },
        "hosts": hosts,
    }


def make_run(
    state: Path, run_id: str = RUN_ID, *, summary: bool = True, hostile: bool = True
) -> Path:
    """Write the simulated run under ``state``; without ``summary`` it looks killed."""
    plan, events, summ = simulate(hostile=hostile)
    tail = b"" if summary else b'{"ts": 1795800099.0, "event": "task_st'
    return write_run(state, run_id, plan, events, summ if summary else None, tail=tail)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "state")


# --------------------------------------------------------------------------- static checks


def test_hostile_strings_are_escaped(run_dir: Path) -> None:
    page = render_report(load_run_dir(run_dir))
    page.encode("utf-8")  # no lone surrogates survive
    assert page.count("<script") == 1  # ours only
    assert "window.__pwned" not in page.split("<script>")[1].split("</script>")[0]
    assert "<img" not in page
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;&#x27;&amp;" in page
    assert "\\xff.txt" in page  # the undecodable byte is shown, not dropped
    assert "\u202e" not in page and "\\u202egnp.exe" in page  # no bidi override reaches view


def test_one_lane_per_host_and_every_attempt_drawn(run_dir: Path) -> None:
    run = load_run_dir(run_dir)
    page = render_report(run)
    assert re.findall(r'<g class="lane" data-host="([^"]*)"', page) == ["h1", "h2", "h3"]
    gantt = page.split('<svg id="gantt"')[1].split("</svg>")[0]
    assert gantt.count('<g class="att ') == len(run.attempts)
    assert gantt.count('class="att map failed"') == 1
    assert gantt.count('class="att map lost"') >= 1
    assert gantt.count('class="att map ok backup"') == 1
    assert gantt.count('class="att map killed"') == 1
    assert gantt.count('class="att reduce ok"') == 4


def test_csp_allows_exactly_our_script_and_style(run_dir: Path) -> None:
    page = render_report(load_run_dir(run_dir))
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert csp is not None
    for tag in ("script", "style"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert body is not None
        digest = base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp.group(1)
    assert "default-src 'none'" in csp.group(1)
    assert not re.search(r"(src|href)=\"(https?:|//)", page)


def test_slowest_shards_puts_the_straggler_first(run_dir: Path) -> None:
    run = load_run_dir(run_dir)
    slowest = {group[0].task: group for group in report.slowest_shards(run.attempts)}
    durations = [report._elapsed(g) for g in slowest.values()]
    assert durations == sorted(durations, reverse=True)
    assert [a.outcome for a in slowest["m00021"]] == ["killed", "ok"]  # straggler, backup
    assert [a.outcome for a in slowest["m00005"]] == ["failed", "lost", "ok"]
    page = render_report(run)
    assert "backup won" in page and "2 retries" in page


def test_report_of_a_killed_run_and_of_an_empty_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    killed = load_run_dir(make_run(state, summary=False))
    assert killed.status == "crashed" and killed.counters_derived
    assert "summary.json is missing" in render_report(killed)
    empty = state / "runs" / "20261127T000000-000000"
    empty.mkdir(parents=True)
    page = render_report(load_run_dir(empty))
    assert "unknown" in page and "No task ran" in page


# --------------------------------------------------------------------------- real runs

FAILING_JOB = """
def mapper(line):
    if line.startswith(b"poison"):
        raise ValueError("bad record </pre><script>window.__pwned=5</script>")
    yield line, 1


def reducer(key, values):
    yield key, sum(values)
"""


def _local_run(tmp_path: Path, job: str | Path, *args: str) -> tuple[int, Path]:
    """Run ``job`` on a small corpus on this machine; (exit code, the run's directory)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text("".join(f"w{j} x y\n" for j in range(1500)))
    (corpus / "z-last.txt").write_text("fine\npoison pill\n")  # far from the warm-up sample
    state = tmp_path / "state"
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "out", "--state-dir", state,
                      "--shard-size", "8K", *args, check=False)
    (run_dir,) = (state / "runs").iterdir()
    return proc.returncode, run_dir


def _groups(gantt: str, cls: str) -> list[str]:
    return re.findall(rf'<g class="{cls}[^"]*"[^>]*>.*?</g>', gantt, re.S)


def test_a_local_runs_report_shows_staging_startups_and_the_hosts_address(
        tmp_path: Path) -> None:
    code, run_dir = _local_run(tmp_path, "wordcount")
    assert code == 0
    plan = json.loads((run_dir / "plan.json").read_text())
    assert [h["address"] for h in plan["hosts"]] == ["local"]  # not the host's name again
    run = load_run_dir(run_dir)
    maps = [a for a in run.attempts if a.kind == "map"]
    assert maps and all(a.staging is not None and a.staging.how == "in place" for a in maps)
    assert all(a.staging.start <= a.staging.end <= a.start for a in maps if a.staging)
    # read in place; its map outputs checksummed as on SSH hosts (shown as a collect)
    assert all(a.transfers[0] == a.staging and [t.kind for t in a.transfers[1:]] in
               ([], ["collect"]) for a in maps)
    reduces = [a for a in run.attempts if a.kind == "reduce"]
    assert reduces and all([t.kind for t in a.transfers] == ["collect"] for a in reduces)
    assert run.startups and all(w.host == run.hosts[0].name for w in run.startups)
    page = render_report(run)
    gantt = page.split('<svg id="gantt"')[1].split("</svg>")[0]
    attempts = _groups(gantt, "att map")
    assert len(attempts) == len(maps)
    for g in attempts:  # the staging segment comes before the compute bar, with its title
        assert re.search(r'<rect class="seg stage"[^>]*><title>input read in place, staged in '
                         r'[^<]*</title></rect><rect class="bar"', g), g
    starts = _groups(gantt, "wait start")
    assert len(starts) == len(run.startups) and "worker starting on" in starts[0]
    legend = page.split('<div class="legend">')[1].split("</div>")[0]
    assert "input staged" in legend and "worker starting" in legend and "slot idle" in legend
    host = run.hosts[0].name
    assert f"<tr><td>{host}</td><td>local</td>" in page


def test_a_failed_runs_report_shows_the_error_and_the_users_traceback_escaped(
        tmp_path: Path) -> None:
    job = tmp_path / "poisoned.py"
    job.write_text(FAILING_JOB)
    code, run_dir = _local_run(tmp_path, job, "--max-attempts", "1")
    assert code == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "failed 1 time" in summary["error"] and "window.__pwned=5" in summary["error"]
    assert "Traceback" in summary["detail"] and f'File "{job}", line 4' in summary["detail"]
    page = render_report(load_run_dir(run_dir))
    assert page.count("<script") == 1 and "window.__pwned=5</script>" not in page
    error = page.split('<section class="error">')[1].split("</section>")[0]
    assert "&lt;/pre&gt;&lt;script&gt;window.__pwned=5&lt;/script&gt;" in error
    detail = error.split('<pre class="detail">')[1].split("</pre>")[0]
    assert detail.startswith("Traceback (most recent call last):")
    assert f"File &quot;{job}&quot;, line 4, in mapper" in detail
    assert "ValueError: bad record &lt;/pre&gt;&lt;script&gt;" in detail
    assert page.index('<section class="error">') < page.index('<div class="cards">')
    failed = _groups(page.split('<svg id="gantt"')[1], "att map failed")
    assert len(failed) == 1 and "traceback:" in failed[0] and "ValueError" in failed[0]


def test_transfer_and_startup_texts() -> None:
    T = report.Transfer
    assert report.transfer_text(T("stage", 0, 1.5, "sent", 3 << 20)) == (
        "input sent to the host: 3.0 MiB, staged in 1.5 s")
    assert report.transfer_text(T("stage", 0, 0.25, "copied", 0, "h2")) == (
        "input copied from host h2, staged in 250 ms")
    assert report.transfer_text(T("stage", 0, 0.25, "cached")).startswith(
        "input already cached on the host")
    assert report.transfer_text(T("stage", 0, 2)) == "staging its input: 2.0 s, never finished"
    assert report.transfer_text(T("fetch", 0, 2, nbytes=1024), "reduce") == (
        "map outputs fetched from other hosts: 1.0 KiB in 2.0 s")
    assert report.transfer_text(T("collect", 0, 2), "reduce").startswith("part file collected")
    assert report.transfer_text(T("collect", 0, 2), "map").startswith("map outputs checked")
    never = report.startup_text(report.Startup("h1", 1, 10, 14, False), 8)
    assert never.startswith("worker starting on h1, slot 1: +2.0 s, never ready (4.0 s)")


def test_worker_startups_and_idle_slots_are_drawn(tmp_path: Path) -> None:
    plan, events, summ = simulate()
    events[1:1] = [{"ts": T0 + 0.01, "event": "worker_start", "host": "h3", "slot": 0},
                   {"ts": T0 + 0.25, "event": "worker_ready", "host": "h3", "slot": 0}]
    run = load_run_dir(write_run(tmp_path / "state", RUN_ID, plan, events, summ))
    gantt = render_report(run).split('<svg id="gantt"')[1].split("</svg>")[0]
    lanes = dict(re.findall(r'<g class="lane" data-host="([^"]*)">(.*?)(?=<g class="lane"|$)',
                            gantt, re.S))
    (start,) = _groups(lanes["h3"], "wait start")
    assert "worker starting on h3, slot 0: +10 ms, ready after 240 ms" in start
    # h1's slots idle between their last map and their reduce (waiting for the last maps)
    idle = _groups(lanes["h1"], "wait idle")
    assert idle and all(re.search(r"h1 slot \d idle for [^:]+: \+[^,]+, waiting for a task", g)
                        for g in idle)
    assert len(_groups(gantt, "att ")) == len(run.attempts)  # waits are not attempts


def test_formatters() -> None:
    assert report.fmt_bytes(0) == "0 B"
    assert report.fmt_bytes(1536) == "1.5 KiB"
    assert report.fmt_bytes(3 << 30) == "3.0 GiB"
    assert report.fmt_duration(0.25) == "250 ms"
    assert report.fmt_duration(12.34) == "12.3 s"
    assert report.fmt_duration(245) == "4m 05s"
    assert report.fmt_duration(7380) == "2h 03m"
    assert report.fmt_duration(None) == "-"


# --------------------------------------------------------------------------- mapred report


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_runs.register(app)
    return app


def test_report_command_writes_atomically(run_dir: Path, tmp_path: Path) -> None:
    state = run_dir.parent.parent
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    out.write_text("old")
    result = CliRunner().invoke(
        _app(), ["report", "2026", "-o", str(out), "--state-dir", str(state)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert os.listdir(out.parent) == ["r.html"]  # no temp file left behind
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_report_command_user_mistakes(run_dir: Path, tmp_path: Path) -> None:
    state = run_dir.parent.parent
    (tmp_path / "file").write_text("")
    below_a_file = tmp_path / "file" / "r.html"
    result = CliRunner().invoke(
        _app(), ["report", RUN_ID, "-o", str(below_a_file), "--state-dir", str(state)]
    )
    assert isinstance(result.exception, UsageError)
    assert "cannot write report to" in str(result.exception)
    result = CliRunner().invoke(_app(), ["report", "1999", "--state-dir", str(state)])
    assert isinstance(result.exception, UsageError) and "'1999'" in str(result.exception)
    result = CliRunner().invoke(
        _app(), ["report", RUN_ID, "-o", str(tmp_path), "--state-dir", str(state)]
    )
    assert isinstance(result.exception, UsageError) and "directory" in str(result.exception)


def test_packed_shards_count_their_other_files_in_words() -> None:
    one_more = report._shard_cells(report.Shard("a.txt", 0, 10, files=2, nbytes=20))
    assert one_more[:2] == ("a.txt + 1 more file", "2 files")
    assert report._shard_cells(report.Shard("a.txt", 0, 10, files=3))[0] == "a.txt + 2 more files"


def test_report_into_directories_that_do_not_exist_yet(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "2026" / "r.html"
    result = CliRunner().invoke(
        _app(), ["report", RUN_ID, "-o", str(target), "--state-dir", str(run_dir.parent.parent)]
    )
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_report_command_to_stdout_and_by_path(run_dir: Path) -> None:
    result = CliRunner().invoke(_app(), ["report", str(run_dir), "-o", "-"])
    assert result.exit_code == 0
    assert result.output.startswith("<!DOCTYPE html>") and result.output.endswith("</html>\n")


def test_write_atomic_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: Any
) -> None:
    target = tmp_path / "r.html"
    target.write_text("old")

    def boom(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        cli_runs.write_atomic(target, b"new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.html"]
    with pytest.raises(OSError):  # and the directories it made for a new file go again
        cli_runs.write_atomic(tmp_path / "new" / "dir" / "r.html", b"new")
    assert os.listdir(tmp_path) == ["r.html"]


def test_help_texts() -> None:
    for cmd in ("runs", "show", "report"):
        result = CliRunner().invoke(_app(), [cmd, "--help"])
        assert result.exit_code == 0
        assert "--state-dir" in result.output
    assert "self-contained HTML" in CliRunner().invoke(_app(), ["report", "--help"]).output


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_or_skip() -> str:
    return sysdeps.need("chromium")


def test_a_missing_tool_skips_naming_its_package_or_fails_under_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysdeps, "find", lambda _thing: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"chromium not installed \(apt-get install chromium\)"):
        chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        chromium_or_skip()


class DevTools:
    """Just enough of the Chrome DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, exe: str, profile: str) -> None:
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds() -> None:  # chromium reads commands on fd 3, writes replies on fd 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary lookup
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "--window-size=1400,900",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=fds,
            stdin=subprocess.DEVNULL,  # noqa: PLW1509
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buf = b""
        self._ids = iter(range(1, 10**9))
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        ident = next(self._ids)
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._recv(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries (CSP...)."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(details.get("exception", {}).get("description") or details["text"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, TimeoutError, EOFError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.fixture
def browser() -> Iterator[DevTools]:
    exe = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="mapred-chromium-") as profile:
        dt = DevTools(exe, profile)
        try:
            yield dt
        finally:
            dt.close()


PAGE_FACTS = """JSON.stringify({
  lanes: Array.from(document.querySelectorAll('#gantt g.lane')).map(
    g => g.getAttribute('data-host')),
  dataHost: document.querySelectorAll('[data-host]').length,
  attempts: document.querySelectorAll('#gantt .att').length,
  gantt: document.getElementById('gantt').getBoundingClientRect().toJSON(),
  laneHeights: Array.from(document.querySelectorAll('#gantt g.lane')).map(
    g => g.getBoundingClientRect().height),
  throughputBars: document.querySelectorAll('#throughput .tp-bar').length,
  slowRows: document.querySelectorAll('tr[data-task]').length,
  overflowX: document.documentElement.scrollWidth > window.innerWidth,
  pwned: window.__pwned === undefined ? null : window.__pwned,
  text: document.body.innerText,
})"""


def test_report_renders_in_chromium(browser: DevTools, run_dir: Path, tmp_path: Path) -> None:
    run = load_run_dir(run_dir)
    page = tmp_path / "report.html"
    page.write_text(render_report(run), encoding="utf-8")
    browser.open(page.as_uri())
    facts = json.loads(browser.evaluate(PAGE_FACTS))
    assert browser.errors() == []
    assert facts["lanes"] == ["h1", "h2", "h3"] and facts["dataHost"] == 3
    assert facts["attempts"] == len(run.attempts)
    assert facts["gantt"]["width"] > 1000 and facts["gantt"]["height"] > 200
    assert all(h > 30 for h in facts["laneHeights"])
    assert facts["throughputBars"] == 3 and facts["slowRows"] >= 10
    assert facts["overflowX"] is False
    assert facts["pwned"] is None  # the hostile file name stayed text
    assert "<script>window.__pwned=2</script>" in facts["text"]
    assert all(u.startswith(("file:", "data:")) for u in browser.requests())
    # the script works: clicking an attempt highlights every attempt of its task
    clicked = browser.evaluate("""(() => {
      const a = document.querySelector('#gantt .att.backup');
      a.dispatchEvent(new MouseEvent('click', {bubbles: true}));
      return [document.querySelectorAll('#gantt .att.hl').length,
              document.getElementById('gantt').classList.contains('hl-on')];
    })()""")
    assert clicked == [2, True]  # the straggler and its backup
    assert browser.errors() == []


def test_hovering_a_transfer_or_a_wait_shows_its_details(browser: DevTools,
                                                        tmp_path: Path) -> None:
    plan, events, summ = simulate()
    for e in events:
        if e["event"] == "task_start" and e["kind"] == "map":
            e["staging"] = {"start": e["ts"] - 0.3, "end": e["ts"], "how": "sent",
                            "bytes": 5 << 20}
    events[1:1] = [{"ts": T0 + 0.01, "event": "worker_start", "host": "h3", "slot": 0},
                   {"ts": T0 + 0.25, "event": "worker_ready", "host": "h3", "slot": 0}]
    run_dir = write_run(tmp_path / "state", RUN_ID, plan, events, summ)
    page = tmp_path / "report.html"
    page.write_text(render_report(load_run_dir(run_dir)), encoding="utf-8")
    browser.open(page.as_uri())
    shown = browser.evaluate("""(() => {
      const hover = (el) => {
        el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
        return document.getElementById('detail').textContent;
      };
      return [hover(document.querySelector('#gantt .att .seg.stage')),
              hover(document.querySelector('#gantt .wait.start rect')),
              hover(document.querySelector('#gantt .wait.idle line'))];
    })()""")
    stage, start, idle = shown
    assert stage.startswith("m0") and "input sent to the host: 5.0 MiB, staged in 300 ms" in stage
    assert start.startswith("worker starting on h3, slot 0")
    assert " idle for " in idle and "waiting for a task" in idle
    assert browser.errors() == []


def test_console_check_catches_a_broken_script(
    browser: DevTools, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "SCRIPT", report.SCRIPT + "\nnull.deliberateFailure();\n")
    page = tmp_path / "broken.html"
    page.write_text(render_report(load_run_dir(run_dir)), encoding="utf-8")
    browser.open(page.as_uri())
    errors = browser.errors()
    assert errors and "deliberateFailure" in errors[0]


def test_csp_blocks_markup_that_escaped_escaping(
    browser: DevTools, run_dir: Path, tmp_path: Path
) -> None:
    page = render_report(load_run_dir(run_dir)).replace(
        "<main>", "<main><script>window.__pwned=4</script><b style='color:red'>x</b>", 1
    )
    (tmp_path / "injected.html").write_text(page, encoding="utf-8")
    browser.open((tmp_path / "injected.html").as_uri())
    assert browser.evaluate("window.__pwned === undefined") is True
    assert any("Content Security Policy" in e for e in browser.errors())


def test_screenshot_script(run_dir: Path, tmp_path: Path) -> None:
    chromium_or_skip()
    png = tmp_path / "shot.png"
    env = {**os.environ, "MAPRED_PYTHON": os.environ.get("MAPRED_PYTHON", _python())}
    result = subprocess.run(  # noqa: S603
        ["bash", str(REPO / "scripts" / "report_screenshot.sh"), str(run_dir), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 900)


def _python() -> str:
    import sys

    return sys.executable


def test_load_run_by_prefix_for_report(run_dir: Path) -> None:
    assert load_run(run_dir.parent.parent, "2026").run_id == RUN_ID
