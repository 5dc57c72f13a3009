"""Progress as the user sees it: every input byte counted once, whole at the end, in the units
of the summary; the reduce phase has its own count; log lines are a heartbeat."""

from __future__ import annotations

import gzip
import logging

import pytest

from mapred import job as jobmod
from mapred.cli import main as cli
from mapred.cluster.transport import LocalTransport
from mapred.engine.progress import LogProgress
from mapred.engine.runner import Progress, RunConfig, Runner

PLAIN_JOB = """\
def mapper(line):
    for w in line.split():
        yield w, 1
def reducer(key, values):
    yield key, sum(values)
"""


class Recorder(Progress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def start(self, total_bytes: int, shards: int) -> None:
        self.calls.append(("start", total_bytes))
        self.shards = shards

    def advance(self, nbytes: int) -> None:
        assert nbytes > 0
        self.calls.append(("advance", nbytes))

    def shard_done(self) -> None:
        self.calls.append(("shard", 1))

    def reduce_start(self, partitions: int) -> None:
        self.calls.append(("reduce", partitions))

    def partition_done(self) -> None:
        self.calls.append(("part", 1))


@pytest.mark.parametrize("tier", ["numba", "plain"])
def test_every_input_byte_is_counted_once_and_reduces_have_their_own_count(tier, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    line = b"alpha beta gamma delta\n"
    (corpus / "big.txt").write_bytes(line * 200_000)  # several shards of 1 MiB
    (corpus / "open.txt").write_bytes(b"no final newline")
    (corpus / "crlf.txt").write_bytes(b"a b\r\nc d\r\n")
    (corpus / "z.gz").write_bytes(gzip.compress(line * 50_000))  # on disk << decompressed
    total = sum(p.stat().st_size for p in corpus.iterdir())
    job = jobmod.resolve("wordcount")
    if tier == "plain":
        job = tmp_path / "plainjob.py"
        job.write_text(PLAIN_JOB)
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    transport = LocalTransport("here", 2, state / "logs", cli._worker_env(),
                               scratch_root=state / "scratch")
    cfg = RunConfig(job=job, corpus=corpus, output=tmp_path / "out", state=state, reducers=3,
                    shard_size=1 << 20)
    rec = Recorder()
    summary = Runner(cfg, [transport], rec).execute()
    kinds = [k for k, _ in rec.calls]
    assert rec.calls[0] == ("start", total)
    assert sum(n for k, n in rec.calls if k == "advance") == total
    assert kinds.count("shard") == rec.shards == summary.shards >= 5
    assert kinds.count("reduce") == 1 and ("reduce", 3) in rec.calls
    assert kinds.count("part") == 3
    first_reduce = kinds.index("reduce")
    assert "shard" not in kinds[first_reduce:] and "part" not in kinds[:first_reduce]
    assert summary.counters["input_bytes"] == total
    assert summary.counters["map_bytes_in"] > total  # decompressed gzip counts more


def test_log_progress_is_a_heartbeat_in_human_units(caplog, monkeypatch):
    import mapred.engine.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    p = LogProgress()
    p.start(3 << 20, 4)
    with caplog.at_level(logging.INFO, logger="mapred"):
        p.tick()  # nothing moved: still a line
        p.advance(1536 << 10)
        p.shard_done()
        p.tick()
        p.reduce_start(2)
        p.partition_done()
        p.tick()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["map 0/4 shards, 0 B of 3.0 MiB", "map 1/4 shards, 1.5 MiB of 3.0 MiB",
                     "reduce 1/2 partitions"]
    fields = caplog.records[-1].fields  # type: ignore[attr-defined]
    assert fields["phase"] == "reduce" and fields["partitions_done"] == 1
    assert caplog.records[0].event == "progress"  # type: ignore[attr-defined]




def test_log_lines_go_above_the_bar_not_through_it(monkeypatch):
    import io

    from mapred.engine import logs
    from mapred.engine.progress import BarProgress

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logs.setup(logging.INFO, "text")
    try:
        bar = BarProgress()
        bar.start(1 << 20, 2)
        bar.advance(1 << 19)
        logging.getLogger("mapred").info("host h2: 1 shard sent")
        bar.close()
    finally:
        logs.setup(logging.INFO, "text")  # back to the real stderr
    text = err.getvalue()
    before, sep, _ = text.partition("mapred: host h2: 1 shard sent\n")
    assert sep, text
    assert before.rsplit("\r", 1)[-1].strip() == "", text  # the bar was cleared first
    assert "512.0 KiB/1.0 MiB, 0/2 shards" in text


def test_json_logs_get_heartbeat_lines_not_a_bar(monkeypatch):
    from mapred.engine import logs
    from mapred.engine.progress import BarProgress, make_progress

    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    try:
        logs.setup(logging.INFO, "json")
        assert isinstance(make_progress(False), LogProgress)
        logs.setup(logging.INFO, "text")
        assert isinstance(make_progress(False), BarProgress)
        assert type(make_progress(True)) is Progress  # -q: nothing
    finally:
        logs.setup(logging.INFO, "text")
