"""What the tests need from the system, read from scripts/system-deps.txt (the only list).

``need("rsync")`` returns the tool's path, or skips the calling test with a reason that names the
tool and the package to install (or fails it when ``CI`` is set: nothing may skip there);
``@pytest.mark.needs("rsync", ...)`` does the same for a whole test (tests/conftest.py).
``missing_packages()`` is what ``make test`` reports at its end, one line a package.
"""

from __future__ import annotations

import glob
import os
import shutil
from functools import cache
from pathlib import Path

DEPS_FILE = Path(__file__).resolve().parent.parent / "scripts" / "system-deps.txt"


@cache
def packages() -> dict[str, tuple[str, ...]]:
    """package -> what it provides (command names, or absolute paths that may hold globs)."""
    table: dict[str, tuple[str, ...]] = {}
    for line in DEPS_FILE.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            table[words[0]] = tuple(words[1:])
    return table


def package_of(thing: str) -> str:
    for pkg, provides in packages().items():
        if thing in provides:
            return pkg
    raise KeyError(f"{thing!r} is not listed in {DEPS_FILE}")


def find(thing: str) -> str | None:
    """The path of a command (PATH, then /usr/sbin and /sbin) or of an absolute path (or glob)."""
    if thing.startswith("/"):
        hits = sorted(glob.glob(thing))
        return hits[0] if hits else None
    return shutil.which(thing, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def missing(*things: str) -> list[str]:
    return [t for t in things if find(t) is None]


INSTALL = "apt-get install "


def reason(things: list[str]) -> str:
    """The skip reason: the missing things, then the packages; :func:`packages_named` reads it."""
    pkgs = sorted({package_of(t) for t in things})
    return f"{', '.join(things)} not installed ({INSTALL}{' '.join(pkgs)})"


def packages_named(why: str) -> set[str]:
    """The packages a skip reason made by :func:`reason` asks for (empty for any other reason)."""
    _, found, tail = why.partition(INSTALL)
    return set(tail.rstrip(")").split()) if found else set()


def need(*things: str) -> str:
    """Skip (or under CI fail) the calling test unless every thing is present; the first's path."""
    import pytest  # lazily: lanlib uses this module outside pytest too

    absent = missing(*things)
    if absent:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test, but {reason(absent)}", pytrace=False)
        pytest.skip(reason(absent))
    return str(find(things[0]))


def missing_packages() -> dict[str, list[str]]:
    """package -> the things it provides that are missing here."""
    out: dict[str, list[str]] = {}
    for pkg, provides in packages().items():
        absent = missing(*provides)
        if absent:
            out[pkg] = absent
    return out
