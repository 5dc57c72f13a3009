"""``--metrics-file``: Prometheus text-format metrics for node_exporter's textfile collector.

Written with prometheus-client at the end of every run, successful or not, atomically (temporary
file + rename, as ``write_to_textfile`` does). The file belongs to one job: every series carries
``mapred_job="NAME"`` (not ``job``, which Prometheus attaches itself at scrape time, turning ours
into ``exported_job``), and each run rewrites the whole file. Several jobs need several files
(``mapred-wordcount.prom``, ``mapred-grep.prom``: the collector reads every ``*.prom`` in its
directory). ``mapred_last_success_timestamp_seconds`` carries over from the previous file when
this run failed — only that job's own value, so an alert can watch its age.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

LAST_SUCCESS = "mapred_last_success_timestamp_seconds"
JOB_LABEL = "mapred_job"
log = logging.getLogger("mapred")


def previous_success(path: Path, job: str) -> float | None:
    """The last success time of ``job`` recorded in ``path``, if the file holds one."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    found: float | None = None
    others: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                owner = sample.labels.get(JOB_LABEL, sample.labels.get("job"))
                if owner is not None and owner != job:
                    others.add(owner)
                elif sample.name == LAST_SUCCESS and owner == job:
                    found = float(sample.value)
    except ValueError:
        return None
    if others:
        log.warning("metrics file %s held the metrics of job %s: they are replaced (give each "
                    "job its own file)", path, ", ".join(sorted(others)))
    return found


def write(path: Path, job: str, exit_code: int, summary: dict[str, Any] | None) -> None:
    reg = CollectorRegistry()
    labels = {JOB_LABEL: job}
    names = list(labels)

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, names, registry=reg).labels(**labels).set(value)

    c = (summary or {}).get("counters", {})
    gauge("mapred_run_duration_seconds", "Wall time of the last run.",
          (summary or {}).get("duration", 0.0))
    gauge("mapred_exit_status", "Exit code of the last run (0 = success).", exit_code)
    gauge("mapred_input_bytes", "Bytes read by committed map tasks.", c.get("bytes_in", 0))
    gauge("mapred_input_records", "Records (lines) read by committed map tasks.",
          c.get("records_in", 0))
    gauge("mapred_output_bytes", "Bytes of part files written.", c.get("bytes_out", 0))
    gauge("mapred_output_records", "Records (keys) in part files.", c.get("keys_out", 0))
    gauge("mapred_shuffle_bytes", "Bytes of map output (partition runs).",
          c.get("shuffle_bytes", 0))
    tasks = Gauge("mapred_tasks", "Committed tasks of the last run.", [*names, "kind"],
                  registry=reg)
    planned = Gauge("mapred_tasks_planned", "Tasks the last run planned.", [*names, "kind"],
                    registry=reg)
    for kind in ("map", "reduce"):
        tasks.labels(**labels, kind=kind).set(c.get(f"{kind}_tasks", 0))
        planned.labels(**labels, kind=kind).set(c.get(f"{kind}_tasks_planned", 0))
    gauge("mapred_task_retries", "Task attempts that failed and were retried.",
          c.get("retries", 0))
    gauge("mapred_task_backups", "Speculative backup attempts started.", c.get("backups", 0))
    gauge("mapred_hosts_lost", "Hosts lost during the last run.", c.get("hosts_lost", 0))
    user = {k[len("user."):]: v for k, v in c.items() if k.startswith("user.")}
    if user:
        counter = Gauge("mapred_user_counter", "The job's own counters (ctx.count), committed "
                        "tasks only.", [*names, "name"], registry=reg)
        for name, value in sorted(user.items()):
            counter.labels(**labels, name=name).set(value)
    previous = previous_success(path, job)
    last = time.time() if exit_code == 0 else previous
    if last is not None:
        gauge(LAST_SUCCESS, "Unix time of the last successful run.", last)
    write_to_textfile(str(path), reg)
