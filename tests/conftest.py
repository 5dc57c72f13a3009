"""Fixtures shared by the unit tests (helpers live in mrtest.py)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import sysdeps
from mrtest import AWKWARD_FILES, real_text_files


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*things): skip (fail under CI) unless these commands or paths, listed "
        "in scripts/system-deps.txt, are present")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        sysdeps.need(*mark.args)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    why = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return why.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly what did not run and why: one line a missing package, then other skips."""
    reasons = [_skip_reason(r) for r in terminalreporter.stats.get("skipped", [])]
    gone = sysdeps.missing_packages()
    if not gone and not reasons:
        return
    terminalreporter.section("what did not run")
    wanted = [sysdeps.packages_named(r) for r in reasons]
    for pkg, things in gone.items():
        n = sum(1 for pkgs in wanted if pkg in pkgs)
        terminalreporter.write_line(
            f"{pkg} not installed ({', '.join(things)}): {n} test(s) skipped; "
            f"as root: apt-get install {pkg}, or run scripts/system-deps.sh")
    other = [r for r, pkgs in zip(reasons, wanted, strict=True) if not pkgs]
    for why in sorted(set(other)):
        terminalreporter.write_line(f"skipped {other.count(why)}: {why}")


@pytest.fixture(scope="session")
def real_text() -> list[Path]:
    """Real text files from Debian packages: fortunes, and the GCIDE dictionary (gzip/dictzip)."""
    return real_text_files()


@pytest.fixture(scope="session")
def awkward_corpus(tmp_path_factory: pytest.TempPathFactory, real_text: list[Path]) -> Path:
    """A corpus with every awkward input the engine must handle, plus real text."""
    root = tmp_path_factory.mktemp("awkward") / "corpus"
    for name, data in AWKWARD_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / os.fsdecode(b"latin1-\xe9t\xe9.txt")).write_bytes(b"non utf8 file name error\n")
    (root / "fortunes.txt").write_bytes(real_text[0].read_bytes())
    with gzip.open(root / "fortunes-copy.gz", "wb") as f:
        f.write(real_text[0].read_bytes()[:200_000])
    return root


@pytest.fixture()
def state_env(tmp_path: Path) -> dict[str, str]:
    """Keep run journals and locks of a test inside its tmp dir."""
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture(scope="session")
def dictionary_sample(tmp_path_factory: pytest.TempPathFactory, real_text: list[Path]) -> Path:
    """3 MB of the GCIDE dictionary as a plain file: real text with many distinct keys."""
    path = tmp_path_factory.mktemp("gcide") / "gcide-3M.txt"
    with gzip.open(real_text[1], "rb") as f:
        path.write_bytes(f.read(3 << 20))
    return path
