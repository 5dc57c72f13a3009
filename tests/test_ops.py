"""Running from cron and scripts: JSON logs, metrics file, deadline, overlapping runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mrtest import ROOT, read_output, run_mapred
from prometheus_client.parser import text_string_to_metric_families

SLOW_JOB = """\
import time
def mapper(line):
    time.sleep(0.02)
    yield line, 1
def reducer(key, values):
    yield key, sum(values)
"""


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    c = tmp_path / "corpus"
    c.mkdir()
    (c / "a.txt").write_bytes(b"x y\n" * 20 + b"z\n")
    return c


def metrics(path: Path) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            key = sample.name + (f"{{kind={sample.labels['kind']}}}" if "kind" in sample.labels
                                 else "")
            out[key] = sample.value
    return out


def test_json_log_lines_all_parse(corpus, tmp_path, state_env):
    job = tmp_path / "fails.py"
    job.write_text("def mapper(l):\n    raise KeyError('nope')\n"
                   "def reducer(k, v):\n    yield k, 1\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--log-format", "json",
                      "--max-attempts", "2", check=False, env=state_env)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    docs = [json.loads(line) for line in lines]  # every stderr line is a JSON object
    beats = [d for d in docs if d["event"] == "progress"]  # one per 10 s, on a slow machine
    assert all(d["phase"] in ("map", "reduce") and d["bytes"] == 82 for d in beats), beats
    docs = [d for d in docs if d["event"] != "progress"]
    assert [d["event"] for d in docs] == ["attempt_failed", "attempt_failed", "error"]
    assert docs[-1]["exit_code"] == 1 and "KeyError" in docs[-1]["detail"]
    assert all(d["run_id"] == docs[0]["run_id"] for d in docs)
    ok = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o2", "--log-format", "json",
                    env=state_env)
    assert [e for x in ok.stderr.decode().splitlines()
            if (e := json.loads(x)["event"]) != "progress"] == ["run_finished"]
    usage = run_mapred("run", "wordcount", corpus, "--log-format", "json", check=False,
                       env=state_env)
    assert usage.returncode == 2
    assert json.loads(usage.stderr.decode())["level"] == "error"


def test_metrics_file_parses_and_keeps_last_success(corpus, tmp_path, state_env):
    prom = tmp_path / "mapred.prom"
    run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o", "--metrics-file", prom,
               env=state_env)
    m = metrics(prom)
    assert m["mapred_exit_status"] == 0
    assert m["mapred_input_bytes"] == 82 and m["mapred_output_records"] == 3
    assert m["mapred_tasks{kind=map}"] == 1
    assert time.time() - m["mapred_last_success_timestamp_seconds"] < 120
    last = m["mapred_last_success_timestamp_seconds"]
    proc = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o", "--metrics-file", prom,
                      check=False, env=state_env)  # exists: exit 2
    assert proc.returncode == 2
    m = metrics(prom)
    assert m["mapred_exit_status"] == 2
    assert m["mapred_last_success_timestamp_seconds"] == last
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_metrics_name_their_job_and_count_only_committed_tasks(corpus, tmp_path, state_env):
    """Each job's series carry mapred_job (Prometheus owns `job`); a failed run of another job
    on the same file never inherits this job's last success; a failed reduce is not counted."""
    prom = tmp_path / "shared.prom"
    run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o", "--metrics-file", prom,
               env=state_env)
    families = list(text_string_to_metric_families(prom.read_text()))
    labels = [s.labels for f in families for s in f.samples]
    assert labels and all(lb.get("mapred_job") == "wordcount" and "job" not in lb
                          for lb in labels)
    bad = tmp_path / "badreduce.py"
    bad.write_text("def mapper(l):\n    yield l, 1\n"
                   "def reducer(k, v):\n    raise ValueError('no')\n")
    proc = run_mapred("run", bad, corpus, "-o", tmp_path / "o2", "--metrics-file", prom,
                      "--max-attempts", "1", "-r", "2", check=False, env=state_env)
    assert proc.returncode == 1
    assert "held the metrics of job wordcount" in proc.stderr.decode()
    m = metrics(prom)
    assert "mapred_last_success_timestamp_seconds" not in m
    assert m["mapred_tasks{kind=map}"] == 1 and m["mapred_tasks{kind=reduce}"] == 0
    assert m["mapred_tasks_planned{kind=reduce}"] == 2
    assert {s.labels["mapred_job"] for f in text_string_to_metric_families(prom.read_text())
            for s in f.samples} == {"badreduce"}


def test_deadline_fails_cleanly(corpus, tmp_path, state_env):
    job = tmp_path / "slow.py"
    job.write_text(SLOW_JOB.replace("0.02", "0.5"))
    t0 = time.monotonic()
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--deadline", "2s",
                      check=False, env=state_env)
    assert proc.returncode == 1
    assert "deadline of 2s exceeded" in proc.stderr.decode()
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "o").exists()


def test_overlapping_runs_second_exits_75_first_untouched(corpus, tmp_path, state_env):
    job = tmp_path / "slow.py"
    job.write_text(textwrap.dedent(SLOW_JOB.replace("0.02", "0.1")))  # ~4 s of mapping
    out = tmp_path / "o"
    env = {**os.environ, **state_env}
    first = subprocess.Popen([sys.executable, "-m", "mapred.cli.main", "run", str(job), str(corpus),
                              "-o", str(out)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    lock_dir = Path(state_env["XDG_STATE_HOME"]) / "mapred" / "locks"
    deadline = time.monotonic() + 20
    while not any(lock_dir.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    t0 = time.monotonic()
    second = run_mapred("run", "wordcount", corpus, "-o", out, check=False, env=state_env)
    assert second.returncode == 75, second.stderr
    assert time.monotonic() - t0 < 5  # at once
    assert first.wait(timeout=60) == 0, first.stderr.read()
    assert read_output(out) == {b"x y": b"20", b"z": b"1"}


def test_straggler_gets_a_backup_that_wins(tmp_path, state_env):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"f{i}.txt").write_bytes(b"w%d x\n" % i * 50 + (b"slow\n" if i == 2 else b""))
    marker = tmp_path / "slow-once"
    job = tmp_path / "straggle.py"
    job.write_text(textwrap.dedent(f"""\
        import os, time
        def mapper(line):
            if line == b"slow" and not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                time.sleep(60)  # the first attempt hangs; a backup does not
            for w in line.split():
                yield w, 1
        def reducer(key, values):
            yield key, sum(values)
    """))
    t0 = time.monotonic()
    run_mapred("run", job, corpus, "-o", tmp_path / "o", "--shard-size", "300", env=state_env)
    assert time.monotonic() - t0 < 30
    got = read_output(tmp_path / "o")
    assert got[b"x"] == b"200" and got[b"slow"] == b"1" and got[b"w2"] == b"50"
    run_dir = next(Path(state_env["XDG_STATE_HOME"]).glob("mapred/runs/*"))
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "task_start" and e["backup"]]
    ends = {e["attempt"]: e["outcome"] for e in events if e["event"] == "task_end"}
    assert len(starts) == 1
    assert ends[starts[0]["attempt"]] == "ok"
    assert "killed" in ends.values()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counters"]["backups"] == 1
    assert not any(p.name.startswith("mapred-") for p in Path("/tmp").iterdir()
                   if p.name.endswith(summary["run_id"]))


def _events(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_resume_after_coordinator_kill_9_reuses_committed_maps(tmp_path, state_env):
    import signal

    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"f{i}.txt").write_bytes(b"".join(b"w%d common\n" % j for j in range(12)))
    job = tmp_path / "slowish.py"
    job.write_text(SLOW_JOB.replace("0.02", "0.1").replace(
        "yield line, 1", "for w in line.split():\n        yield w, 1"))
    out = tmp_path / "o"
    env = {**os.environ, **state_env}
    args = [sys.executable, "-m", "mapred.cli.main", "run", str(job), str(corpus), "-o", str(out),
            "--shard-size", "100", "--no-speculation"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = Path(state_env["XDG_STATE_HOME"]) / "mapred" / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dirs = list(runs.glob("*")) if runs.exists() else []
        done = [e for d in dirs for e in _events(d)
                if e["event"] == "task_end" and e["outcome"] == "ok" and e["kind"] == "map"]
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = dirs[0]
    committed = {e["task"] for e in _events(first)
                 if e["event"] == "task_end" and e["outcome"] == "ok" and e["kind"] == "map"}
    total = len(json.loads((first / "plan.json").read_text())["shards"])
    assert 3 <= len(committed) < total
    assert not out.exists()
    ours = state_env["XDG_STATE_HOME"]  # in the environment of this test's workers only
    deadline = time.monotonic() + 10  # the dead coordinator's workers see stdin close and exit
    while True:
        leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                    and "mapred.worker.main" in _cmdline_env(p) and ours in _cmdline_env(p)]
        if not leftover or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert leftover == []
    # the same command line plus --resume: committed maps are not run again
    run_mapred(*args[3:], "--resume", env=state_env)
    second = next(d for d in runs.glob("*") if d != first)
    starts = {e["task"] for e in _events(second)
              if e["event"] == "task_start" and e["kind"] == "map"}
    assert starts.isdisjoint(committed)
    assert len(starts) == total - len(committed)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["counters"]["maps_reused"] == len(committed)
    want = {b"common": b"96", **{b"w%d" % j: b"8" for j in range(12)}}
    assert read_output(out) == want
    assert list((runs.parent / "scratch").iterdir()) == []  # both runs' scratch removed


def _cmdline_env(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().decode(errors="replace") + \
            (proc_dir / "environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_resume_refuses_when_the_job_changed(tmp_path, state_env):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"a b\n")
    job = tmp_path / "j.py"
    job.write_text("def mapper(l):\n    raise ValueError('broken')\n"
                   "def reducer(k, v):\n    yield k, 1\n")
    out = tmp_path / "o"
    assert run_mapred("run", job, corpus, "-o", out, "--max-attempts", "1", check=False,
                      env=state_env).returncode == 1
    job.write_text("def mapper(l):\n    yield l, 1\ndef reducer(k, v):\n    yield k, 1\n")
    proc = run_mapred("run", job, corpus, "-o", out, "--resume", check=False, env=state_env)
    assert proc.returncode == 2
    assert "job module's code changed" in proc.stderr.decode()
    run_mapred("run", job, corpus, "-o", out, env=state_env)  # without --resume: fine
    assert read_output(out) == {b"a b": b"1"}
