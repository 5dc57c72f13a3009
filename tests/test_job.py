"""Job module loading: tiers, parameters, and the errors users see."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mapred import job as jobmod
from mapred.errors import JobLoadError, UsageError


def write(tmp_path: Path, source: str) -> Path:
    p = tmp_path / "j.py"
    p.write_text(source)
    return p


def test_bundled_jobs_resolve_and_load():
    assert {"wordcount", "grep", "ngrams", "invindex", "logfield"} <= set(jobmod.bundled_jobs())
    wc = jobmod.load(jobmod.resolve("wordcount"), {})
    assert wc.tier == "numba" and wc.aggregate == "sum"
    inv = jobmod.load(jobmod.resolve("invindex"), {})
    assert inv.tier == "plain" and inv.mapper_takes_ctx and inv.combiner is not None
    lf = jobmod.load(jobmod.resolve("logfield"), {"field": "3"})
    assert lf.extra == (3,)


def test_resolve_errors(tmp_path):
    with pytest.raises(UsageError, match="no job module or bundled job named 'nope'"):
        jobmod.resolve("nope")
    with pytest.raises(UsageError, match="job module not found"):
        jobmod.resolve(str(tmp_path / "x.py"))


def test_params():
    assert jobmod.parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        jobmod.parse_params(["=1"])


def test_init_receives_params_and_value_error_is_a_usage_error(tmp_path):
    p = write(tmp_path, "SEEN = None\ndef init(params):\n    global SEEN\n    SEEN = params\n"
                        "    if params.get('n') == 'bad':\n        raise ValueError('n is bad')\n"
                        "def mapper(r):\n    yield r, 1\ndef reducer(k, v):\n    yield k, 1\n")
    job = jobmod.load(p, {"n": "2"})
    assert job.module.SEEN == {"n": "2"}
    with pytest.raises(JobLoadError, match=r"j.py: init\(params\) failed: n is bad") as e:
        jobmod.load(p, {"n": "bad"})
    assert e.value.exit_code == 2 and e.value.detail is None


def test_user_traceback_keeps_only_user_frames(tmp_path):
    p = write(tmp_path, "def helper():\n    1 / 0\nhelper()\n")
    with pytest.raises(JobLoadError) as e:
        jobmod.load(p, {})
    tb = e.value.detail or ""
    assert tb.startswith("Traceback") and "ZeroDivisionError" in tb
    assert 'j.py", line 2, in helper' in tb
    assert "importlib" not in tb and "mapred/job.py" not in tb


def test_check_syntax_names_file_and_line(tmp_path):
    p = write(tmp_path, "x = 1\ndef f(:\n")
    with pytest.raises(JobLoadError, match=r"j.py:2: syntax error"):
        jobmod.check_syntax(p)


@pytest.mark.parametrize("tier", ["wordcount", "grep"])
@pytest.mark.parametrize("layout", ["one file", "packed files", "gzip"])
def test_a_file_read_in_place_must_still_be_as_planned(tmp_path, tier, layout):
    """Both tiers, every read path (memory-mapped, packed, gzip): a piece carrying the planned
    size and mtime fails with InputChanged if the file is not that file any more."""
    import gzip as gz

    from mapred import job as jobmod
    from mapred.worker.mapper import InputChanged, MapSpec, PieceSpec, run_map

    job = jobmod.load(jobmod.resolve(tier), {"pattern": "w"} if tier == "grep" else {})
    files = [tmp_path / "a.txt"] + ([tmp_path / "b.txt"] if layout == "packed files" else [])
    for f in files:
        f.write_bytes(gz.compress(b"w x\n" * 500) if layout == "gzip" else b"w x\n" * 500)

    def spec() -> MapSpec:
        pieces = tuple(PieceSpec(str(f), f.name, 0, f.stat().st_size, layout == "gzip",
                                 size=f.stat().st_size, mtime_ns=f.stat().st_mtime_ns)
                       for f in files)
        return MapSpec("m0", "m0.0", pieces)

    planned = spec()
    run_map(job, planned, tmp_path / "ok", 1, 0, lambda n: None)  # unchanged: fine
    os.truncate(files[-1], 40)
    with pytest.raises(InputChanged, match=f"input file changed during the run: {files[-1].name}"):
        run_map(job, planned, tmp_path / "changed", 1, 0, lambda n: None)


PLAIN = "def mapper(line):\n    yield line, 1\ndef reducer(k, v):\n    yield k, sum(v)\n"


def test_declared_params_get_defaults_and_refuse_unknown_or_missing_keys(tmp_path):
    p = write(tmp_path, "PARAMS = {'n': '2', 'pattern': None}\nSEEN = None\n"
                        "def init(params):\n    global SEEN\n    SEEN = params\n" + PLAIN)
    job = jobmod.load(p, {"pattern": "x"})
    assert job.module.SEEN == {"n": "2", "pattern": "x"} and job.warnings == []
    with pytest.raises(JobLoadError, match=r"j.py: unknown parameter 'nn': did you mean 'n'\? "
                                           r"\(this job's parameters: n, pattern\)$"):
        jobmod.load(p, {"pattern": "x", "nn": "3"})
    with pytest.raises(JobLoadError, match=r"j.py: missing parameter: pattern \(use -p "
                                           r"pattern=VALUE\)$"):
        jobmod.load(p, {"n": "3"})
    bad = write(tmp_path, "PARAMS = {'n': 2}\n" + PLAIN)
    with pytest.raises(JobLoadError, match="PARAMS must be a dict"):
        jobmod.load(bad, {})


def test_bundled_jobs_declare_their_parameters():
    with pytest.raises(JobLoadError, match="unknown parameter 'feild': did you mean 'field'"):
        jobmod.load(jobmod.resolve("logfield"), {"feild": "3"})
    assert jobmod.load(jobmod.resolve("logfield"), {}).extra == (0,)
    with pytest.raises(JobLoadError, match="missing parameter: pattern"):
        jobmod.load(jobmod.resolve("grep"), {})
    assert jobmod.load(jobmod.resolve("ngrams"), {}).module.N == 2


@pytest.mark.parametrize("body,warned", [
    ("N = params.get('n')", ["m"]),
    ("N = params['n'] if 'm' in params else 0", []),
    ("N = dict(params)", []),  # read as a whole: every key counts as read
    ("N = sorted(params.items())", []),
    ("N = params.copy().get('n')", []),
    ("N = None", ["m", "n"]),
])
def test_without_params_keys_init_never_reads_are_warnings(tmp_path, body, warned):
    p = write(tmp_path, f"def init(params):\n    global N\n    {body}\n" + PLAIN)
    job = jobmod.load(p, {"n": "1", "m": "2"})
    assert [w.split("-p ")[1].split("=")[0] for w in job.warnings] == warned
    for w in job.warnings:
        assert w.startswith(f"{p}: parameter -p ") and "never read it" in w


def test_a_job_without_init_takes_no_parameters(tmp_path):
    p = write(tmp_path, PLAIN)
    assert jobmod.load(p, {}).warnings == []
    with pytest.raises(JobLoadError, match=r"j.py: this job takes no parameters \(it has no "
                                           r"init\(params\)\), got -p a, b$"):
        jobmod.load(p, {"b": "1", "a": "2"})


@pytest.mark.parametrize("source,message", [
    ("from numba import njit\nAGGREGATE = 'sum'\ndef init(params):\n    return (1,)\n"
     "@njit\ndef scan(buf, pos, starts, ends, values):\n    return 0, len(buf)\n",
     r"j.py:6: scan\(buf, pos, starts, ends, values\) cannot be called as scan\(buf, pos, "
     r"starts, ends, values\) plus the 1 value init\(params\) returned"),
    ("def init():\n    pass\n" + PLAIN, r"j.py:1: init\(\) cannot be called as init\(params\)"),
    ("def mapper(line):\n    yield line, 1\ndef reducer(key):\n    yield key, 1\n",
     r"j.py:3: reducer\(key\) cannot be called as reducer\(key, values\)"),
    (PLAIN + "def combiner(k, v, w):\n    yield k, 1\n",
     r"j.py:5: combiner\(k, v, w\) cannot be called as combiner\(key, values\)"),
])
def test_signatures_are_checked_on_load(tmp_path, source, message):
    with pytest.raises(JobLoadError, match=message):
        jobmod.load(write(tmp_path, source), {})


def test_a_scan_without_njit_is_a_warning_naming_its_line(tmp_path):
    p = write(tmp_path, "AGGREGATE = 'sum'\n\n\ndef scan(buf, pos, starts, ends, values):\n"
                        "    return 0, len(buf)\n")
    job = jobmod.load(p, {})
    assert job.tier == "numba"
    assert job.warnings == [f"{p}:4: scan() is not compiled with @njit: it runs as plain Python, "
                            "tens of times slower (add `from numba import njit` and "
                            "@njit(cache=True, nogil=True) above it)"]
    assert jobmod.load(jobmod.resolve("wordcount"), {}).warnings == []
