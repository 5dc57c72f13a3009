"""``mapred run --inline``: the job in this one process, same output as a normal run; print()
and breakpoint() reach the terminal; errors as in a normal run, without retries."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mrtest import ROOT, read_output, run_mapred

CASES = [("wordcount", []), ("grep", ["-p", "pattern=error|[Ll]ove"]), ("ngrams", ["-p", "n=2"]),
         ("invindex", []), ("tests/jobs/offsets.py", [])]


@pytest.mark.parametrize("job,params", CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_inline_output_is_byte_for_byte_that_of_a_normal_run(job, params, awkward_corpus,
                                                             tmp_path, state_env):
    run_mapred("run", job, awkward_corpus, "-o", tmp_path / "normal", "-r", "3", *params,
               env=state_env)
    proc = run_mapred("run", job, awkward_corpus, "-o", tmp_path / "inline", "-r", "3", *params,
                      "--inline", env=state_env)
    assert read_output(tmp_path / "inline") == read_output(tmp_path / "normal")
    names = sorted(p.name for p in (tmp_path / "inline").iterdir())
    assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    for part in names[1:]:  # the very bytes, not only the same pairs
        assert (tmp_path / "inline" / part).read_bytes() == (tmp_path / "normal" / part).read_bytes()
    assert b" in 3 parts" in proc.stderr


def test_print_and_breakpoint_work_in_user_code(tmp_path, state_env):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"first line\nsecond line\n")
    job = tmp_path / "debugme.py"
    job.write_text("seen = 0\n"
                   "def mapper(line):\n"
                   "    global seen\n"
                   "    seen += 1\n"
                   "    print('mapping', line)\n"
                   "    if seen == 2:\n"
                   "        breakpoint()\n"
                   "    yield line.split()[0], 1\n"
                   "def reducer(key, values):\n"
                   "    yield key, sum(values)\n")
    proc = subprocess.run([sys.executable, "-m", "mapred.cli.main", "run", str(job), str(corpus), "-o",
                           str(tmp_path / "o"), "--inline"], cwd=ROOT, input=b"p line\nc\n",
                          capture_output=True, timeout=120,
                          env={**state_env, "PATH": "/usr/bin:/bin", "PYTHONBREAKPOINT": ""})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "mapping b'first line'" in out and "mapping b'second line'" in out
    assert "(Pdb) b'second line'" in out  # pdb stopped in the mapper and printed its local
    assert read_output(tmp_path / "o") == {b"first": b"1", b"second": b"1"}


def test_a_failing_mapper_fails_at_once_with_its_traceback(tmp_path, state_env):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"ok\nboom\n")
    job = tmp_path / "fails.py"
    job.write_text("def mapper(line):\n"
                   "    if line == b'boom':\n"
                   "        raise KeyError(line)\n"
                   "    yield line, 1\n"
                   "def reducer(key, values):\n"
                   "    yield key, sum(values)\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--inline", check=False,
                      env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    first = err.splitlines()[0]
    assert first.startswith("mapred: error: map task m00000 (c.txt bytes 0-8) failed: "
                            "mapper() raised KeyError"), err
    assert f'File "{job}", line 3, in mapper' in err and "mapred/" not in err
    assert "retried" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra", [["--hosts", "hosts.toml"], ["--resume"],
                                   ["--metrics-file", "m.prom"], ["--deadline", "1m"]])
def test_options_that_need_the_engine_are_refused_with_inline(extra, tmp_path, state_env):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"a\n")
    proc = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o", "--inline", *extra,
                      check=False, env=state_env)
    assert proc.returncode == 2
    assert f"{extra[0]} does not go with --inline" in proc.stderr.decode()
