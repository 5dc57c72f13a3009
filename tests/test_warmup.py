"""The warm-up sample: the corpus head it is given, and what it refuses (and does not)."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest

from mapred import job as jobmod
from mapred import warmup
from mapred.errors import JobLoadError
from mapred.shards import list_inputs, plan


def head_of(corpus: Path, shard_size: int = 1 << 20) -> dict | None:
    return warmup.corpus_head(plan(list_inputs(corpus), shard_size))


def test_the_corpus_head_is_whole_records_of_the_first_shard(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a-empty.txt").write_bytes(b"")
    (corpus / "b.txt").write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    head = head_of(corpus)
    assert head is not None and head["rel"] == "b.txt" and head["offset"] == 0
    data = base64.b64decode(head["data"])
    assert data == b"".join(b"line %d\n" % i for i in range(warmup.HEAD_RECORDS))

    (corpus / "b.txt").write_bytes(b"x" * (warmup.HEAD_BYTES + 10) + b"\nnext\n")
    assert head_of(corpus) is None  # no whole record in the first HEAD_BYTES
    (corpus / "b.txt").write_bytes(b"one\ntwo")  # the last record has no newline: still whole
    assert base64.b64decode(head_of(corpus)["data"]) == b"one\ntwo\n"


def test_the_corpus_head_of_a_gzip_file_is_decompressed(tmp_path):
    f = tmp_path / "log.gz"
    f.write_bytes(gzip.compress(b"alpha beta\ngamma\n" * 10))
    head = head_of(f)
    assert head is not None and head["rel"] == "log.gz"
    assert base64.b64decode(head["data"]) == b"alpha beta\ngamma\n" * 10


def write_job(tmp_path: Path, source: str, name: str = "j.py") -> jobmod.Job:
    p = tmp_path / name
    p.write_text(source)
    return jobmod.load(p, {})


def sample(lines: list[bytes], rel: str = "in.txt", offset: int = 0) -> dict:
    return {"rel": rel, "offset": offset,
            "data": base64.b64encode(b"".join(x + b"\n" for x in lines)).decode()}


def test_plain_contract_errors_name_the_line_and_the_record(tmp_path):
    job = write_job(tmp_path, "def mapper(line):\n    if line == b'b':\n        yield line\n"
                              "    yield line, 1\n"
                              "def reducer(k, v):\n    yield k, sum(v)\n")
    warmup.sample_run(tmp_path, job, sample([b"a", b"c"]))  # fine on these records
    with pytest.raises(JobLoadError) as e:
        warmup.sample_run(tmp_path, job, sample([b"a", b"b"], "log.txt", 100))
    assert e.value.message == (f"{job.path}:3: mapper() yielded b'b', not a (key, value) pair "
                               "(record at byte 102 of log.txt)")
    assert e.value.detail is None


def test_yield_from_points_at_the_innermost_yield_of_the_job(tmp_path):
    job = write_job(tmp_path, "def words(line):\n    yield from line.split()\n"
                              "def mapper(line):\n    yield from words(line)\n"
                              "def reducer(k, v):\n    yield k, sum(v)\n")
    with pytest.raises(JobLoadError, match=r"j.py:2: mapper\(\) yielded b'a', not a"):
        warmup.sample_run(tmp_path, job, sample([b"a b"]))


def test_errors_of_the_data_are_left_to_the_tasks(tmp_path):
    job = write_job(tmp_path, "def mapper(line):\n    yield line, int(line)\n"
                              "def reducer(k, v):\n    yield k, 1 / 0\n")
    warmup.sample_run(tmp_path, job, sample([b"1", b"x"]))  # neither raises here
    numba_job = write_job(tmp_path, "from numba import njit\nAGGREGATE = 'sum'\n@njit\n"
                                    "def scan(buf, pos, starts, ends, values):\n"
                                    "    if len(buf) > 0:\n        raise ValueError('no')\n"
                                    "    return 0, len(buf)\n", "n.py")
    warmup.sample_run(tmp_path, numba_job, None)


def test_the_plain_sample_stops_after_its_time_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "PLAIN_SECONDS", 0.0)
    job = write_job(tmp_path, "SEEN = []\ndef mapper(line):\n    SEEN.append(line)\n"
                              "    yield line, 1\ndef reducer(k, v):\n    yield k, sum(v)\n")
    warmup.sample_run(tmp_path, job, sample([b"a", b"b", b"c"]))
    assert job.module.SEEN == [b"a"]


def test_what_user_code_prints_in_the_warm_up_is_discarded(tmp_path, capsys):
    job = write_job(tmp_path, "def mapper(line):\n    print('mapping', line)\n"
                              "    yield line, 1\ndef reducer(k, v):\n    yield k, sum(v)\n")
    warmup.sample_run(tmp_path, job, sample([b"a"]))
    assert capsys.readouterr().out == ""


FLOAT_SCAN = """\
from numba import njit
AGGREGATE = "sum"


@njit(cache=True)
def scan(buf, pos, starts, ends, values):
    n = 0
    if len(buf) > 0:
        starts[0] = 0
        ends[0] = 1
        values[n] = n / 2
        n = 1
    return n, len(buf)
"""


def test_a_float_value_is_refused_also_when_scan_comes_from_numbas_cache(tmp_path):
    for attempt in ("compiled", "cached"):
        job = write_job(tmp_path, FLOAT_SCAN)
        with pytest.raises(JobLoadError) as e:
            warmup.sample_run(tmp_path, job, None)
        assert e.value.message == (
            f"{job.path}:11: scan() stores a float64 into values, an int64 array: numba would "
            "truncate it silently (0.5 becomes 0). Values are integers: scale and round, e.g. "
            "round(x * 1000)")
        assert job.scan.stats.cache_hits if attempt == "cached" else job.scan.stats.cache_misses


def test_integer_values_and_bundled_kernels_pass(tmp_path):
    warmup.sample_run(tmp_path, write_job(tmp_path, FLOAT_SCAN.replace("n / 2", "n // 2")), None)
    logfield = jobmod.load(jobmod.resolve("logfield"), {"field": "1"})
    warmup.sample_run(tmp_path, logfield, sample([b"a b c"]))


def test_a_mapper_that_ends_its_process_is_named_as_the_cause(tmp_path):
    """os._exit in the mapper kills each worker while it runs the warm-up sample: the run
    ends saying so, with the worker log, not only 'no usable host'."""
    from mrtest import run_mapred

    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"a b\n")
    job = tmp_path / "exits.py"
    job.write_text("import os\ndef mapper(line):\n    os._exit(7)\n    yield line, 1\n"
                   "def reducer(k, v):\n    yield k, sum(v)\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False,
                      env={"XDG_STATE_HOME": str(tmp_path / "state")}, timeout=120)
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert proc.returncode == 3, last
    assert "exited while starting (loading the job and running it on the corpus's first " \
           "records)" in last and "worker log: " in last, last
    assert not (tmp_path / "o").exists()
