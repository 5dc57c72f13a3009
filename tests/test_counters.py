"""User counters (ctx.count in a plain-tier mapper): exactly once per committed task, in the
summary line, summary.json, `mapred show`, the report and the metrics file."""

from __future__ import annotations

import json
from pathlib import Path

from mrtest import run_mapred
from prometheus_client.parser import text_string_to_metric_families

JOB = """\
import os
from pathlib import Path

def mapper(line, ctx):
    fields = line.split()
    if len(fields) != 2:
        ctx.count("bad_lines")
        return
    ctx.count("good_lines")
    ctx.count("bytes_ok", len(line))
    marker = Path(os.environ["FLAKY_MARKER"])
    if fields[0] == b"last" and not marker.exists():
        marker.write_text("failed once")  # the first attempt dies after counting everything
        raise RuntimeError("flaky")
    yield fields[0], int(fields[1])

def reducer(key, values):
    yield key, sum(values)
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    corpus = tmp_path / "c.txt"
    rows = [f"k{i % 5} {i}" for i in range(200)] + ["broken line here", "", "last 1"]
    corpus.write_text("\n".join(rows) + "\n")
    job = tmp_path / "counting.py"
    job.write_text(JOB)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"),
           "FLAKY_MARKER": str(tmp_path / "marker")}
    return corpus, job, env


def test_counters_count_once_per_committed_task_and_reach_every_view(tmp_path):
    corpus, job, env = _setup(tmp_path)
    want = {"user.bad_lines": 2, "user.good_lines": 201,
            "user.bytes_ok": sum(len(f"k{i % 5} {i}") for i in range(200)) + len("last 1")}
    prom = tmp_path / "m.prom"
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--metrics-file", prom,
                      env=env)
    err = proc.stderr.decode()
    assert (tmp_path / "marker").exists() and "flaky" in err  # one attempt failed, was retried
    assert f"mapred: counters: bad_lines 2, bytes_ok {want['user.bytes_ok']:,}, " \
           "good_lines 201" in err, err
    runs = list((tmp_path / "state" / "mapred" / "runs").iterdir())
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert {k: v for k, v in summary["counters"].items() if k.startswith("user.")} == want
    shown = run_mapred("show", runs[0].name, env=env).stdout.decode()
    assert "job counters\n" in shown, shown
    assert [line.split() for line in shown.split("job counters\n")[1].splitlines()[:3]] == [
        ["bad_lines", "2"], ["bytes_ok", f"{want['user.bytes_ok']:,}"], ["good_lines", "201"]]
    report = tmp_path / "r.html"
    run_mapred("report", runs[0].name, "-o", report, env=env)
    assert "user.bad_lines" in report.read_text()
    samples = {s.labels["name"]: s.value for f in text_string_to_metric_families(prom.read_text())
               for s in f.samples if s.name == "mapred_user_counter"}
    assert samples == {k[len("user."):]: v for k, v in want.items()}


def test_inline_runs_count_the_same(tmp_path):
    corpus, job, env = _setup(tmp_path)
    (tmp_path / "marker").write_text("no failure this time")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--inline", env=env)
    assert "counters: bad_lines 2, " in proc.stderr.decode()


def test_a_bad_counter_name_is_the_users_error(tmp_path):
    corpus, _, env = _setup(tmp_path)
    job = tmp_path / "badname.py"
    job.write_text("def mapper(line, ctx):\n    ctx.count('')\n    yield line, 1\n"
                   "def reducer(k, v):\n    yield k, 1\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False, env=env)
    assert proc.returncode in (1, 2)
    assert "a counter name is a printable str" in proc.stderr.decode()
