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
    from mapred.mapper import InputChanged, MapSpec, PieceSpec, run_map

    job = jobmod.load(jobmod.resolve(tier), {"pattern": "w"})
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
