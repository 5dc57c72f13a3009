"""Jobs of more than one file: the job's own modules are imported locally, shipped to hosts
(see tests/integration/test_ssh_run.py), and part of what --resume compares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mrtest import read_output, run_mapred

from mapred import jobfiles
from mapred.engine import resume

JOB = """\
from helpers import words
from textpkg.norm import lower

def mapper(line):
    for w in words(line):
        yield lower(w), 1

def reducer(key, values):
    yield key, sum(values)
"""


def _job_tree(root: Path) -> Path:
    (root / "textpkg").mkdir(parents=True)
    (root / "helpers.py").write_text("def words(line):\n    return line.split()\n")
    (root / "textpkg" / "__init__.py").write_text("")
    (root / "textpkg" / "norm.py").write_text("def lower(w):\n    return w.lower()\n")
    job = root / "multi job.py"
    job.write_text(JOB)
    return job


def test_a_job_importing_its_own_modules_runs_locally_and_inline(tmp_path, state_env):
    job = _job_tree(tmp_path / "myjobs")
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"The cat and THE dog\nthe end\n")
    want = {k.lower(): str(v).encode()
            for k, v in Counter(w.lower() for w in corpus.read_bytes().split()).items()}
    for extra in ([], ["--inline"]):
        out = tmp_path / f"out{len(extra)}"
        run_mapred("run", job, corpus, "-o", out, *extra, env=state_env, cwd=tmp_path)
        assert read_output(out) == want


def test_a_syntax_error_in_a_helper_is_exit_2_naming_it(tmp_path, state_env):
    job = _job_tree(tmp_path / "myjobs")
    (tmp_path / "myjobs" / "helpers.py").write_text("def words(line:\n")
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"a\n")
    proc = run_mapred("run", job, corpus, "-o", tmp_path / "o", check=False, env=state_env)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert f"{tmp_path / 'myjobs' / 'helpers.py'}:1: syntax error in a module the job" in err


def test_resume_refuses_when_a_module_the_job_imports_changed(tmp_path):
    job = _job_tree(tmp_path / "myjobs")
    before = resume.job_fingerprint(jobfiles.find(job), {}, 2, 0, 1 << 20)
    (tmp_path / "myjobs" / "textpkg" / "norm.py").write_text("def lower(w):\n    return w\n")
    after = resume.job_fingerprint(jobfiles.find(job), {}, 2, 0, 1 << 20)
    assert before["job_sha256"] == after["job_sha256"]  # the job module itself is unchanged
    try:
        resume.check_compatible({"run_id": "R", "fingerprint": before}, after)
    except Exception as e:  # noqa: BLE001
        assert "the modules the job imports changed" in str(e)
    else:
        raise AssertionError("a changed helper module must not be resumed over")
