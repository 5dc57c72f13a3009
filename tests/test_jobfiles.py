"""Which files make a job: its module and the modules it imports from its own directory."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mapred import jobfiles
from mapred.errors import JobLoadError


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_imports_from_the_jobs_directory_are_found_recursively_others_are_not(tmp_path):
    _tree(tmp_path, {
        "my job.py": "import os, re\nfrom helpers import tokenize\nimport pkg.sub\n"
                     "from pkg import other\ntry:\n    import not_there\nexcept ImportError:\n"
                     "    pass\nimport numpy\n",
        "helpers.py": "import deep_helper\n",
        "deep_helper.py": "",
        "pkg/__init__.py": "", "pkg/sub.py": "from . import deep\n", "pkg/deep.py": "",
        "pkg/other.py": "", "unused.py": "", "notes.txt": "",
    })
    found = jobfiles.find(tmp_path / "my job.py")
    assert found.main == "my_job.py"  # a plain identifier on hosts
    assert [rel for rel, _ in found.files] == [
        "deep_helper.py", "helpers.py", "my_job.py", "pkg/__init__.py", "pkg/deep.py",
        "pkg/other.py", "pkg/sub.py"]
    sums = dict(found.files)
    assert sums["helpers.py"] == hashlib.sha256(b"import deep_helper\n").hexdigest()


def test_the_digest_changes_with_any_file_and_only_then(tmp_path):
    _tree(tmp_path, {"job.py": "from helpers import x\n", "helpers.py": "x = 1\n"})
    first = jobfiles.find(tmp_path / "job.py").digest
    assert jobfiles.find(tmp_path / "job.py").digest == first
    (tmp_path / "unrelated.py").write_text("y = 2\n")
    assert jobfiles.find(tmp_path / "job.py").digest == first
    (tmp_path / "helpers.py").write_text("x = 2\n")
    assert jobfiles.find(tmp_path / "job.py").digest != first


def test_mapred_files_names_what_no_reader_can_see(tmp_path):
    _tree(tmp_path, {"job.py": "import importlib\nMAPRED_FILES = ['plugins/a.py']\n"
                               "mod = importlib.import_module('plugins.a')\n",
                     "plugins/a.py": "", "plugins/b.py": ""})
    assert [r for r, _ in jobfiles.find(tmp_path / "job.py").files] == ["job.py", "plugins/a.py"]
    (tmp_path / "job.py").write_text("MAPRED_FILES = ['../outside.py']\n")
    with pytest.raises(JobLoadError, match="not a file in the job's directory"):
        jobfiles.find(tmp_path / "job.py")


def test_a_syntax_error_in_a_helper_names_its_file_and_line(tmp_path):
    _tree(tmp_path, {"job.py": "import helpers\n", "helpers.py": "x = 1\ndef (:\n"})
    with pytest.raises(JobLoadError, match=r"helpers\.py:2: syntax error"):
        jobfiles.find(tmp_path / "job.py")


def test_verify_accepts_a_whole_copy_and_refuses_any_change(tmp_path):
    src = tmp_path / "src"
    _tree(src, {"job.py": "import helpers\n", "helpers.py": "x = 1\n"})
    found = jobfiles.find(src / "job.py")
    shipped = tmp_path / "jobs" / found.digest
    shipped.mkdir(parents=True)
    for rel, _ in found.files:
        shutil.copy(src / rel, shipped / rel)
    (shipped / jobfiles.MANIFEST).write_bytes(found.manifest())
    assert jobfiles.verify(shipped)
    (shipped / "helpers.py").write_text("x = 2\n")
    assert not jobfiles.verify(shipped)
    (shipped / "helpers.py").write_text("x = 1\n")
    (shipped / jobfiles.MANIFEST).write_bytes(found.manifest() + b" ")
    assert not jobfiles.verify(shipped)  # the manifest must hash to the directory's name


def test_bundled_jobs_are_one_file(tmp_path):
    from mapred import job as jobmod

    for name in jobmod.bundled_jobs():
        found = jobfiles.find(jobmod.resolve(name))
        assert [r for r, _ in found.files] == [f"{name}.py"], name
