"""The README's code can be copied and run as it stands: every Python block is a whole job that
loads and gives the bundled job's output, the hosts.toml example parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mrtest import ROOT, read_output, run_mapred

from mapred.cluster import hosts

BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]


def bundled_name(code: str) -> str:
    """The job a snippet shows, from its first line: ``# jobs/NAME.py ...``."""
    m = re.match(r"# jobs/(\w+)\.py\b", code)
    assert m, f"a README job snippet names its file on its first line:\n{code[:200]}"
    return m[1]


def test_the_readme_shows_the_jobs_it_says() -> None:
    assert sorted(bundled_name(c) for c in PYTHON) == ["logfield", "ngrams", "wordcount"]
    assert [lang for lang, _ in BLOCKS].count("toml") == 1


def _snippet_id(code: str) -> str:
    m = re.match(r"# jobs/(\w+)\.py\b", code)
    return m[1] if m else "unnamed"


@pytest.mark.parametrize("code", PYTHON, ids=_snippet_id)
def test_a_python_snippet_runs_as_is_like_the_bundled_job(code: str, tmp_path: Path,
                                                         state_env: dict[str, str]) -> None:
    name = bundled_name(code)
    job = tmp_path / f"readme_{name}.py"
    job.write_text(code)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "log.txt").write_bytes(b"10.0.0.1 GET /a 200\n10.0.0.2 GET /b 404\n"
                                     b"10.0.0.1 POST /a 200\n\n  indented line\n")
    run_mapred("run", job, corpus, "-o", tmp_path / "snippet", env=state_env)
    run_mapred("run", name, corpus, "-o", tmp_path / "bundled", env=state_env)
    assert read_output(tmp_path / "snippet") == read_output(tmp_path / "bundled") != {}


def test_the_hosts_toml_example_parses(tmp_path: Path) -> None:
    (toml,) = [code for lang, code in BLOCKS if lang == "toml"]
    path = tmp_path / "hosts.toml"
    path.write_text(toml)
    cluster = hosts.load_hosts(path)
    assert [h.name for h in cluster.hosts] == ["h1"] and cluster.shuffle == "direct"
