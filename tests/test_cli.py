"""The command line as a user meets it: exit codes, one-line errors, atomic output, signals."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sysdeps
from mrtest import FORTUNES, ROOT, escape, read_output, run_mapred

from mapred import paths
from mapred.cli.main import parse_duration
from mapred.errors import UsageError


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    c = tmp_path / "corpus"
    c.mkdir()
    (c / "a.txt").write_bytes(b"b a b\nc\n")
    (c / "b.txt").write_bytes(b"a\n")
    return c


def job_file(tmp_path: Path, source: str, name: str = "userjob.py") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(source))
    return p


def error_line(err: str) -> str:
    """The one `mapred: error:` line (warnings about retried attempts may come before it)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("mapred: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def assert_one_line_error(proc, code: int, *needles: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mapred: error: ")
    for n in needles:
        assert n in lines[0], err


def test_success_writes_parts_and_success_marker(corpus, tmp_path, state_env):
    out = tmp_path / "out"
    proc = run_mapred("run", "wordcount", corpus, "-o", out, "-r", "2", env=state_env)
    assert read_output(out) == {b"a": b"2", b"b": b"2", b"c": b"1"}
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000", "part-00001"]
    assert b"\r" not in proc.stderr  # no terminal: no progress bar
    assert not list(tmp_path.glob(".out.mapred-*"))  # no staging left behind


@pytest.mark.parametrize("job,params", [("wordcount", []), ("grep", ["-p", "pattern=a"])])
def test_relative_paths_are_relative_to_where_mapred_runs(job, params, corpus, tmp_path):
    """Corpus, output, state dir and job given relative to the current directory (as `make demo`
    does), for both tiers: the workers find all of them."""
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    for f in corpus.iterdir():
        (work / "in" / f.name).write_bytes(f.read_bytes())
    (work / "job.py").write_bytes((ROOT / "jobs" / f"{job}.py").read_bytes())
    run_mapred("run", "job.py", "in", "-o", "out", "--state-dir", "st", "--shard-size", "1",
               *params, cwd=work)
    run_mapred("run", work / "job.py", corpus, "-o", tmp_path / "abs", "--state-dir",
               tmp_path / "st2", *params)
    assert read_output(work / "out") == read_output(tmp_path / "abs") != {}


@pytest.mark.parametrize("args,code,needles", [
    (["run", "wordcount", "{tmp}/missing", "-o", "{tmp}/o"], 2, ["corpus not found", "missing"]),
    (["run", "nosuchjob", "{corpus}", "-o", "{tmp}/o"], 2, ["nosuchjob", "bundled"]),
    (["run", "{tmp}/nope.py", "{corpus}", "-o", "{tmp}/o"], 2, ["job module not found"]),
    (["run", "wordcount", "{corpus}", "-o", "{tmp}/o", "-p", "novalue"], 2, ["KEY=VALUE"]),
    (["run", "wordcount", "{corpus}", "-o", "{corpus}/inside"], 2, ["overlap"]),
    (["run", "wordcount", "{corpus}", "-o", "/dev/null/o"], 2,
     ["output /dev/null/o cannot be made: /dev/null is not a directory"]),
    (["run", "wordcount", "{corpus}", "-o", "{tmp}/o", "--deadline", "1h30x"], 2,
     ["not a duration: '1h30x'", "1h30m"]),
    (["run", "grep", "{corpus}", "-o", "{tmp}/o"], 2, ["grep.py", "missing parameter: pattern"]),
    (["run", "grep", "{corpus}", "-o", "{tmp}/o", "-p", "pattern=("], 2, ["not a valid"]),
    (["run", "ngrams", "{corpus}", "-o", "{tmp}/o", "-p", "n=x"], 2, ["parameter n"]),
    (["run", "wordcount", "{corpus}", "-o", "{tmp}/o", "--shard-size", "lots"], 2, ["size"]),
    (["run", "wordcount", "{corpus}", "-o", "{tmp}/o", "--hosts", "{tmp}/h.toml"], 2,
     ["h.toml"]),
])
def test_usage_errors_are_one_line_exit_2(args, code, needles, corpus, tmp_path, state_env):
    args = [a.format(tmp=tmp_path, corpus=corpus) for a in args]
    proc = run_mapred(*args, check=False, env=state_env)
    assert_one_line_error(proc, code, *needles)
    assert not (tmp_path / "o").exists()


def test_malformed_hosts_file_names_file_host_and_key(corpus, tmp_path, state_env):
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "a"\naddress = "local"\ncorez = 2\n')
    proc = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "o", "--hosts", hosts,
                      check=False, env=state_env)
    assert_one_line_error(proc, 2, "hosts.toml", "'a'", "corez")


def test_existing_output_refused_then_overwritten_atomically(corpus, tmp_path, state_env):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_mapred("run", "wordcount", corpus, "-o", out, check=False, env=state_env)
    assert_one_line_error(proc, 2, "output exists", "--overwrite")
    run_mapred("run", "wordcount", corpus, "-o", out, "--overwrite", env=state_env)  # empty: ok
    (corpus / "c.txt").write_bytes(b"a a\n")
    run_mapred("run", "wordcount", corpus, "-o", out, "--overwrite", env=state_env)  # mapred's
    assert read_output(out)[b"a"] == b"4"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("planted", ["notes.txt", "_SUCCESS-less", "subdir", "symlink"])
def test_overwrite_replaces_only_a_directory_mapred_wrote(corpus, tmp_path, state_env, planted):
    out = tmp_path / "out"
    run_mapred("run", "wordcount", corpus, "-o", out, env=state_env)
    if planted == "notes.txt":
        (out / "notes.txt").write_text("keep me")
    elif planted == "_SUCCESS-less":
        (out / "_SUCCESS").unlink()
    elif planted == "subdir":
        (out / "part-00009").mkdir()
    else:
        (out / "part-00000").unlink()
        (out / "part-00000").symlink_to(tmp_path / "elsewhere")
    before = sorted((p.name, p.is_file() and p.read_bytes()) for p in out.iterdir())
    proc = run_mapred("run", "wordcount", corpus, "-o", out, "--overwrite", check=False,
                      env=state_env)
    assert_one_line_error(proc, 2, "--overwrite refused", f"{out} is not a mapred output")
    assert sorted((p.name, p.is_file() and p.read_bytes()) for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_never_touches_a_users_own_directory(corpus, tmp_path, state_env):
    home = tmp_path / "home"
    (home / "precious").mkdir(parents=True)
    (home / "precious" / "thesis.tex").write_text("years of work")
    env = {**state_env, "HOME": str(home)}
    for out, needle in ((home / "precious", "it holds no _SUCCESS"),
                        (home, "contains $HOME"),
                        (tmp_path / "state", "contains the state directory"),
                        (tmp_path / "w", "contains the working directory")):
        (tmp_path / "w" / "cwd").mkdir(parents=True, exist_ok=True)
        proc = run_mapred("run", "wordcount", corpus, "-o", out, "--overwrite", check=False,
                          env=env, cwd=tmp_path / "w" / "cwd")
        assert_one_line_error(proc, 2, needle)
    assert (home / "precious" / "thesis.tex").read_text() == "years of work"


def test_an_output_containing_the_job_or_the_hosts_file_is_refused(corpus, tmp_path, state_env):
    mine = tmp_path / "mine"
    mine.mkdir()
    job = mine / "job.py"
    job.write_bytes((ROOT / "jobs" / "wordcount.py").read_bytes())
    hosts = mine / "hosts.toml"
    hosts.write_text('[[host]]\nname = "me"\naddress = "local"\n')
    for args, needle in (([job, corpus, "-o", mine], "contains the job"),
                         (["wordcount", corpus, "-o", mine, "--hosts", hosts],
                          "contains the hosts file")):
        proc = run_mapred("run", *args, "--overwrite", check=False, env=state_env)
        assert_one_line_error(proc, 2, needle)
    assert sorted(p.name for p in mine.iterdir()) == ["hosts.toml", "job.py"]


@pytest.mark.parametrize("source,needles", [
    ("def mapper(line):\n    yield line,\n  x = (\n", ["userjob.py:3", "syntax error"]),
    ("def mapper(line):\n    yield line, 1\n", ["userjob.py", "no reducer()"]),
    ("x = 1\n", ["userjob.py", "neither"]),
    ("import json\nraise RuntimeError('bad import')\n", ["userjob.py", "bad import"]),
    ("from numba import njit\nAGGREGATE = 'avg'\n@njit\ndef scan(b, p, s, e, v):\n"
     "    return 0, len(b)\n", ["AGGREGATE", "'avg'"]),
])
def test_broken_job_modules_exit_2_naming_the_file(source, needles, corpus, tmp_path,
                                                   state_env):
    job = job_file(tmp_path, source)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False, env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    first = err.splitlines()[0]
    assert first.startswith("mapred: error: ")
    for n in needles:
        assert n in first, err
    if "bad import" in source:
        assert 'userjob.py", line 2' in err  # the user's own traceback follows
    assert not (tmp_path / "o").exists()


def test_mapper_raising_fails_with_shard_and_user_traceback(tmp_path, state_env):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "big.txt").write_bytes(b"fine\n" * 1000 + b"poison\n" + b"fine\n" * 1000)
    job = job_file(tmp_path, """\
        def mapper(line):
            if line == b"poison":
                raise ValueError("cannot digest " + line.decode())
            yield line, 1

        def reducer(key, values):
            yield key, sum(values)
    """)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--shard-size", "4K",
                      "--max-attempts", "2", check=False, env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    first = error_line(err)
    assert re.search(r"\(big.txt bytes \d+-\d+\) failed 2 times", first), first
    assert "ValueError: cannot digest poison" in first
    assert "record at byte 5000 of big.txt" in first
    assert 'userjob.py", line 3, in mapper' in err
    assert not re.search(r'File "[^"]*/mapred/', err)  # only the user's frames
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_numba_scan_out_of_bounds_is_a_user_error(corpus, tmp_path, state_env):
    """Found by the warm-up sample, before any shard: exit 2, one line."""
    job = job_file(tmp_path, """\
        from numba import njit
        AGGREGATE = "max"

        @njit(cache=True)
        def scan(buf, pos, starts, ends, values):
            starts[0] = 0
            ends[0] = len(buf) + 10
            values[0] = 1
            return 1, len(buf)
    """)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False, env=state_env)
    assert only_line(proc, 2).startswith(
        f"mapred: error: {job}:5: scan() emitted a key span outside its buffer")


def only_line(proc, code: int) -> str:
    """The one line a run wrote to stderr, but for the progress lines of a slow run (one every
    10 s: workers start slowly on a busy machine)."""
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    lines = [ln for ln in err.splitlines() if not re.match(r"mapred: (map|reduce) \d+/", ln)]
    assert len(lines) == 1, err
    return lines[0]


SCAN_HEAD = 'from numba import njit\nAGGREGATE = "sum"\n\n@njit(cache=True)\n'
PAIRS_REDUCER = "def reducer(key, values):\n    yield key, sum(values)\n"


@pytest.mark.parametrize("source,line,needle", [
    (SCAN_HEAD + "def scan(buf, pos, starts, ends):\n    return 0, len(buf)\n", 5,
     "scan(buf, pos, starts, ends) cannot be called as scan(buf, pos, starts, ends, values)"),
    (SCAN_HEAD + "def scan(buf, pos, starts, ends, values):\n    word = 'n' + 1\n"
     "    return 0, len(buf)\n", 6, "scan() does not compile (numba TypingError): No "
     "implementation of function Function(<built-in function add>) found for signature"),
    (SCAN_HEAD + "def scan(buf, pos, starts, ends, values):\n    starts[0] = 0\n    ends[0] = 1\n"
     "    values[0] = 0.5\n    return 1, len(buf)\n", 8,
     "scan() stores a float64 into values, an int64 array: numba would truncate it silently"),
    ("def mapper(line):\n    for word in line.split():\n        yield word\n" + PAIRS_REDUCER, 3,
     "mapper() yielded b'b', not a (key, value) pair (record at byte 0 of a.txt)"),
    ("def mapper(line):\n    yield len(line), 1\n" + PAIRS_REDUCER, 2,
     "mapper() yielded a key of type int (5): keys must be bytes or str"),
    ("def mapper(line):\n    return line, 1\n" + PAIRS_REDUCER, 1,
     "mapper() returned one pair (b'b a b', 1): yield pairs, or return a list of them"),
    ("def mapper(line):\n    yield line, object()\n" + PAIRS_REDUCER, 1,
     "mapper(): a value of type builtins.object cannot be passed between tasks"),
    ("def mapper(line):\n    yield line, 1\ndef reducer(key, values):\n    yield sum(values)\n", 4,
     "reducer() yielded 1, not a (key, value) pair (key b'b a b')"),
    ("def mapper(line, ctx, more):\n    yield line, 1\n" + PAIRS_REDUCER, 1,
     "mapper(line, ctx, more) cannot be called as mapper(line) or mapper(line, ctx)"),
])
def test_job_mistakes_are_one_line_exit_2_before_any_shard(source, line, needle, corpus,
                                                           tmp_path, state_env):
    """Caught on load or by the warm-up sample: no retries, no traceback, the user's line."""
    job = job_file(tmp_path, source)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False, env=state_env)
    assert only_line(proc, 2).startswith(f"mapred: error: {job}:{line}: {needle}")
    assert not (tmp_path / "o").exists()


def test_an_error_of_the_data_in_the_first_records_is_still_retried(corpus, tmp_path,
                                                                    state_env):
    """The warm-up sample sees it too, but it is the data's, not the contract's."""
    job = job_file(tmp_path, "def mapper(line):\n    yield line, int(line)\n" + PAIRS_REDUCER)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--max-attempts", "2",
                      check=False, env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert re.search(r"failed 2 times; .* mapper\(\) raised ValueError: invalid literal",
                     error_line(err)), err
    assert 'userjob.py", line 2, in mapper' in err


@pytest.mark.parametrize("job,params,needle", [
    ("logfield", ["-p", "feild=3"],
     "logfield.py: unknown parameter 'feild': did you mean 'field'? (this job's parameters: "
     "field)"),
    ("grep", ["-p", "pattern=a", "-p", "ignorecase=1"],
     "grep.py: unknown parameter 'ignorecase': did you mean 'ignore_case'?"),
    ("wordcount", ["-p", "n=3"],
     "wordcount.py: this job takes no parameters (it has no init(params)), got -p n"),
])
def test_parameters_a_job_does_not_take_are_refused(job, params, needle, corpus, tmp_path,
                                                    state_env):
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", *params, check=False,
                      env=state_env)
    assert needle in only_line(proc, 2)


def many_files(tmp_path: Path) -> Path:
    """A corpus that keeps two workers busy."""
    c = tmp_path / "many"
    c.mkdir()
    for i in range(6):
        (c / f"f{i}.txt").write_bytes(b"x y\n" * 50)
    return c


def test_a_parameter_init_never_reads_is_one_warning(tmp_path, state_env):
    job = job_file(tmp_path, """\
        N = 1
        def init(params):
            global N
            N = int(params.get("n", "1"))
        def mapper(line):
            yield line.split()[0], N
        def reducer(key, values):
            yield key, sum(values)
    """)
    proc = run_mapred("run", job, many_files(tmp_path), "-o", tmp_path / "o", "-p", "n=2",
                      "-p", "m=3", "--shard-size", "100", env=state_env)
    warnings = [ln for ln in proc.stderr.decode().splitlines() if "warning" in ln]
    assert warnings == [f"mapred: warning: {job}: parameter -p m=... was given but init(params) "
                        "never read it (it read: n); declare PARAMS = {...} in the job to refuse "
                        "unknown keys"]
    assert read_output(tmp_path / "o") == {b"x": b"600"}


def test_a_scan_without_njit_runs_with_one_warning(tmp_path, state_env):
    source = (ROOT / "jobs" / "wordcount.py").read_text().replace("@njit(cache=True, nogil=True)\n",
                                                                  "")
    job = job_file(tmp_path, source)
    line = source.splitlines().index("def scan(buf, pos, starts, ends, values):") + 1
    proc = run_mapred("run", job, many_files(tmp_path), "-o", tmp_path / "o", "--shard-size",
                      "100", env=state_env)
    warnings = [ln for ln in proc.stderr.decode().splitlines() if "warning" in ln]
    assert warnings == [f"mapred: warning: {job}:{line}: scan() is not compiled with @njit: it "
                        "runs as plain Python, tens of times slower (add `from numba import njit` "
                        "and @njit(cache=True, nogil=True) above it)"]
    assert read_output(tmp_path / "o") == {b"x": b"300", b"y": b"300"}


def test_print_goes_to_the_worker_log_named_in_the_error_never_into_the_protocol(tmp_path,
                                                                                 state_env):
    """Without PYTHONUNBUFFERED too: what user code prints is in the log when the task fails, a
    printed protocol-like line changes nothing, and reading stdin does not eat requests."""
    corpus = many_files(tmp_path)
    job = job_file(tmp_path, """\
        import os, sys
        def mapper(line):
            print('{"ev": "done", "attempt": "m00000.0", "outputs": {}, "counters": {}}')
            print("mapping", line.decode().strip(), end="")
            sys.stdout.write("!\\n")
            os.write(1, b"straight to fd 1\\n")
            assert sys.stdin.read() == ""
            if line == b"poison":
                raise ValueError("poisoned")
            yield line, 1
        def reducer(key, values):
            print("reducing", key.decode())
            yield key, sum(values)
    """)
    env = {**state_env, "PYTHONUNBUFFERED": ""}
    run_mapred("run", job, corpus, "-o", tmp_path / "o", "--shard-size", "100", env=env,
               timeout=120)
    assert read_output(tmp_path / "o") == {b"x y": b"300"}
    logs = Path(state_env["XDG_STATE_HOME"]) / "mapred" / "logs"
    text = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert "mapping x y!\nstraight to fd 1\n" in text and "reducing x y\n" in text

    (corpus / "f5.txt").write_bytes(b"x y\npoison\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o2", "--shard-size", "100",
                      "--max-attempts", "1", check=False, env=env, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "ValueError: poisoned" in error_line(err)
    named = re.findall(r"^worker log \(print, stderr\): (\S+)$", err, re.MULTILINE)
    assert len(named) == 1, err
    assert "mapping poison!\n" in Path(named[0]).read_text()


def test_help_is_complete():
    for args in (["--help"], ["run", "--help"]):
        proc = run_mapred(*args)
        out = proc.stdout.decode()
        assert "Usage:" in out
    run_help = run_mapred("run", "--help").stdout.decode()
    for option in ("--output", "--hosts", "--reducers", "--param", "--overwrite"):
        assert option in run_help
    assert "Exit codes" in run_mapred("--help").stdout.decode()


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("0.5", 0.5), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
    ("1h30m", 5400), ("1h30m15s", 5415), ("1d2h", 93600), ("1.5h", 5400), (" 1H 30M ", 5400),
    ("2m0s", 120)])
def test_durations_single_or_compound(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "30m1h", "1h1h", "1h-5m", "-5", "0", "0s",
                                  "1e3", "1 h 2", "1.2.3s", "9" * 400])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


def test_missing_output_parents_are_made_and_a_failed_run_leaves_none(corpus, tmp_path,
                                                                      state_env):
    out = tmp_path / "new" / "deeper" / "out"
    run_mapred("run", "wordcount", corpus, "-o", out, "--deadline", "1h30m", env=state_env)
    assert read_output(out) == {b"a": b"2", b"b": b"2", b"c": b"1"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging left
    job = job_file(tmp_path, """
        def mapper(line):
            raise ValueError("no")
        def reducer(key, values):
            yield key, sum(values)
    """)
    (tmp_path / "kept").mkdir()  # an existing parent stays, the ones made for the run go
    for target in (tmp_path / "fresh" / "a" / "out", tmp_path / "kept" / "b" / "out"):
        proc = run_mapred("run", job, corpus, "-o", target, "--max-attempts", "1", check=False,
                          env=state_env)
        assert proc.returncode == 1, proc.stderr.decode()
    assert not (tmp_path / "fresh").exists()
    assert list((tmp_path / "kept").iterdir()) == []


def test_second_run_on_locked_output_exits_75(corpus, tmp_path, state_env):
    out = tmp_path / "out"
    lock = paths.lock_file(Path(state_env["XDG_STATE_HOME"]) / "mapred", out.resolve())
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        proc = run_mapred("run", "wordcount", corpus, "-o", out, check=False, env=state_env)
    assert_one_line_error(proc, 75, "another mapred run", str(out))
    assert not out.exists()
    run_mapred("run", "wordcount", corpus, "-o", out, env=state_env)  # lock released


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if "mapred.worker.main" in (entry / "cmdline").read_bytes().decode(errors="replace") \
                    and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start_slow_run(tmp_path: Path, env: dict[str, str],
                    **popen: Any) -> tuple[subprocess.Popen, Path, Path, list[int]]:
    """A local run of a word count that takes 50 ms a line; (process, job, corpus, workers)
    once its workers run."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"x y\n" * 200)
    job = job_file(tmp_path, """\
        import time
        def mapper(line):
            time.sleep(0.05)
            yield from ((w, 1) for w in line.split())
        def reducer(key, values):
            yield key, sum(values)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "mapred.cli.main", "run", str(job), str(corpus),
                             "-o", str(tmp_path / "o")], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + 30
    while not _children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = _children_of(proc.pid)
    assert workers, "workers did not start"
    return proc, job, corpus, workers


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                         (signal.SIGHUP, 129)])
def test_interrupt_leaves_no_output_no_scratch_no_workers(signum, code, tmp_path, state_env):
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, **state_env, "TMPDIR": str(tmp_path / "tmp")}
    proc, _, _, workers = _start_slow_run(tmp_path, env, stderr=subprocess.PIPE)
    time.sleep(1.0)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err.decode().strip().splitlines()[-1].startswith("mapred: error: ")
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "state" / "mapred" / "scratch").iterdir()) == []  # scratch removed
    time.sleep(0.2)
    assert [p for p in workers if Path(f"/proc/{p}").exists()
            and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]] == []


def test_a_run_killed_with_sigkill_leaves_staging_the_next_run_removes(tmp_path, state_env):
    proc, job, corpus, _ = _start_slow_run(tmp_path, {**os.environ, **state_env},
                                           stderr=subprocess.DEVNULL, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its workers: a power cut
    proc.wait(timeout=10)
    left = list(tmp_path.glob(".o.mapred-*"))
    assert left, "the killed run had no staging dir yet"
    run_mapred("run", job, corpus, "-o", tmp_path / "o", env=state_env)
    assert list(tmp_path.glob(".o.mapred-*")) == []
    assert (tmp_path / "o" / "part-00000").read_bytes() == b"x\t200\ny\t200\n"


def test_worker_crash_is_retried_then_reported_with_its_shard(tmp_path, state_env):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"ok\n" * 100)
    (corpus / "b.txt").write_bytes(b"ok\ncrash\n")
    job = job_file(tmp_path, """\
        import os, sys
        def mapper(line):
            if line == b"crash":
                print("about to die", file=sys.stderr, flush=True)
                os._exit(7)
            yield line, 1
        def reducer(key, values):
            yield key, sum(values)
    """)
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", "--shard-size", "100",
                      "--max-attempts", "3", check=False, env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    first = error_line(err)
    assert "b.txt" in first and "failed 3 times" in first, err
    assert "worker process exited unexpectedly: about to die" in first, err
    assert not (tmp_path / "o").exists()


def test_flaky_worker_crash_recovers(tmp_path, state_env):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"x y\n" * 50)
    marker = tmp_path / "crashed-once"
    job = job_file(tmp_path, f"""\
        import os
        def mapper(line):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(9)
            for w in line.split():
                yield w, 1
        def reducer(key, values):
            yield key, sum(values)
    """)
    run_mapred("run", job, corpus, "-o", tmp_path / "o", env=state_env)
    assert read_output(tmp_path / "o") == {b"x": b"50", b"y": b"50"}


def test_progress_bar_on_a_terminal_only(tmp_path, state_env, dictionary_sample):
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 0x0 hides bars
    env = {**os.environ, **state_env, "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "mapred.cli.main", "run", "ngrams",
                             str(dictionary_sample), "-o", str(tmp_path / "o"), "-p", "n=1"],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(master)
    assert b"\r" in seen and b"shards" in seen and b"map" in seen, seen[-500:]
    assert b"MiB/" in seen and b"reduce" in seen and b"partitions" in seen, seen[-500:]
    # the bar is cleared before the summary line, which uses the same units
    *_, cleared, last, _ = seen.split(b"\r")
    assert cleared.strip() == b"", seen[-500:]
    assert re.match(rb"mapred: \d+\.\d MiB in \d+ shards -> ", last), seen[-500:]


@pytest.mark.parametrize("hidden", [("rsync",), ("ssh",), ("ssh", "rsync")])
def test_ssh_hosts_without_ssh_or_rsync_here_exit_2_naming_the_program(
        tmp_path: Path, corpus: Path, hidden: tuple[str, ...]) -> None:
    # mapred runs by absolute path; its PATH holds only the client tools that are not hidden.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ssh", "rsync"):
        if tool not in hidden and shutil.which(tool):
            (bindir / tool).symlink_to(str(shutil.which(tool)))
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "h1"\naddress = "198.18.0.11"\n')
    for args in (["run", "wordcount", corpus, "--hosts", hosts, "-o", tmp_path / "out"],
                 ["hosts", "check", "--hosts", hosts], ["hosts", "setup", "--hosts", hosts]):
        proc = run_mapred(*args, check=False, env={"PATH": str(bindir)}, timeout=60)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        line = error_line(err)
        absent = [t for t in ("ssh", "rsync") if t in hidden or shutil.which(t) is None]
        assert f"{hosts} names SSH hosts, but {' and '.join(absent)} " in line, line
        assert "not installed on this machine" in line and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.needs("ssh", "rsync")
def test_a_host_that_hangs_up_is_one_line_without_paramikos_traceback(
        tmp_path: Path, corpus: Path) -> None:
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def hang_up() -> None:  # accept and close at once: paramiko's "Error reading SSH banner"
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[[host]]\nname = "h1"\naddress = "127.0.0.1"\nport = {srv.getsockname()[1]}\n'
                     f'known_hosts = "{tmp_path / "kh"}"\n')
    try:
        proc = run_mapred("run", "wordcount", corpus, "--hosts", hosts, "-o", tmp_path / "out",
                          check=False, timeout=120)
    finally:
        srv.close()
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "host h1" in error_line(err) and "Traceback" not in err and "Exception" not in err, err


def test_an_input_file_changed_while_the_run_maps_fails_the_job_naming_it(tmp_path, state_env):
    """Local runs read the corpus in place: a file truncated after planning is caught (its
    size and mtime are part of each task), not mapped short with exit 0."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    victim = corpus / "b.txt"
    victim.write_bytes(b"word\n" * 1000)
    (corpus / "a.txt").write_bytes(b"TRUNCATE " + bytes(victim) + b"\n")
    job = job_file(tmp_path, """
        import os

        def mapper(line):
            if line.startswith(b"TRUNCATE "):
                path = line[len(b"TRUNCATE "):].decode()
                if os.path.getsize(path) > 50:
                    os.truncate(path, 50)
            yield line, 1

        def reducer(key, counts):
            yield key, sum(counts)
    """)
    # the two small files make one shard, read in order: a.txt's mapper truncates b.txt
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "out", check=False, env=state_env)
    line = error_line(proc.stderr.decode())
    assert proc.returncode == 1, proc.stderr.decode()
    assert "input file changed during the run: b.txt (planned 5000 bytes, now 50 bytes)" in line
    assert not (tmp_path / "out").exists()


def symlinked_corpus(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A corpus whose links reach files inside it (again) and outside it, with the real files
    each link leads to (path -> bytes): the reference counts each of those once."""
    corpus, ext = tmp_path / "corpus", tmp_path / "elsewhere"
    real = {"corpus/real/in.txt": b"inside inside words\n", "corpus/real/sub/deep.txt": b"deep\n",
            "corpus/top.txt": b"top words\n", "elsewhere/out.txt": b"outside words\n",
            "elsewhere/more/x.txt": b"outside x\n"}
    for name, data in real.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (corpus / "alias.txt").symlink_to("real/in.txt")  # sorts first, yet real/in.txt is read
    (corpus / "real-again").symlink_to("real")  # the whole folder again
    (corpus / "real" / "sub" / "up").symlink_to("../..")  # a cycle
    (corpus / "ext").symlink_to(ext)  # outside
    (corpus / "ext-file.txt").symlink_to(ext / "out.txt")  # outside, and under ext/ again
    (corpus / "dangling").symlink_to(tmp_path / "gone")
    return corpus, real


def test_symlinks_count_each_real_file_once_and_outside_needs_follow_symlinks(tmp_path,
                                                                             state_env):
    corpus, real = symlinked_corpus(tmp_path)
    proc = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "out", check=False,
                      env=state_env)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert error_line(err) == (
        f"mapred: error: symlink points outside the corpus: {corpus / 'ext'} -> "
        f"{tmp_path / 'elsewhere'} (and 1 more); --follow-symlinks reads what such links point to")
    assert f"warning: skipped dangling symlink {corpus / 'dangling'}" in err
    assert not (tmp_path / "out").exists()

    proc = run_mapred("run", "wordcount", corpus, "-o", tmp_path / "out", "--follow-symlinks",
                      env=state_env)
    want: Counter[bytes] = Counter()
    for data in real.values():
        want.update(data.split())
    assert read_output(tmp_path / "out") == {k: str(v).encode() for k, v in want.items()}
    assert "mapred: corpus: skipped 4 symlinks or hard links" in proc.stderr.decode()

    run_mapred("run", "invindex", corpus, "-o", tmp_path / "index", "--follow-symlinks",
               env=state_env)
    index = read_output(tmp_path / "index")
    assert index[b"inside"] == b"real/in.txt"  # the path without a link wins
    assert index[b"outside"] == b"ext/more/x.txt\text/out.txt"  # ext/ is walked before ext-file


def test_debian_fortunes_with_their_u8_links_count_each_file_once(tmp_path, state_env):
    """The issue's case: every fortunes file has a `NAME.u8 -> NAME` link beside it."""
    fortunes = Path(sysdeps.need(str(FORTUNES / "fortunes"))).parent
    want: Counter[bytes] = Counter()
    links = 0
    for dirpath, dirnames, filenames in os.walk(fortunes):  # does not follow links
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                links += 1
                assert os.path.realpath(path).startswith(f"{fortunes}/"), path
            elif not name.startswith("."):
                want.update(Path(path).read_bytes().split())
    assert links > 0
    run_mapred("run", "wordcount", fortunes, "-o", tmp_path / "out", env=state_env)
    assert read_output(tmp_path / "out") == {escape(k): str(v).encode() for k, v in want.items()}
