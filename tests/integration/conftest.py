"""Fixtures for tests against the real test LAN (tests/lanlib.py).

* ``lan``: a session-wide LAN of 3 sshd hosts (h1..h3).  Tests that inject failures into it
  must call ``lan.heal()`` (or ``host.heal()``) in a ``finally``.
* ``lan_hosts_toml``: a mapred ``hosts.toml`` for ``lan``.
* ``make_lan(n)``: a factory for extra LANs, torn down when the test ends.
* ``lan_required``: skip (or, with ``CI`` set, fail) when this machine cannot run a LAN.
* ``lan_mapred``: this tree's mapred installed into the LAN hosts' venv (its python).

Every test under tests/integration/ gets the ``integration`` marker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for lanlib

from lanlib import Lan  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs the real test LAN (root, sshd, rsync, ip)"
    )


@pytest.hookimpl(tryfirst=True)  # before -m "not integration" deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lan_required() -> None:
    """Skip with the reason when the LAN cannot run here; in CI (env CI set) fail instead."""
    ok, why = Lan.available()
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the test LAN must run in CI but cannot: {why}", pytrace=False)
    pytest.skip(f"test LAN unavailable: {why}")


@pytest.fixture(scope="session")
def lan(lan_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """Three real sshd hosts h1..h3 for the whole session."""
    net = Lan.up(3, tmp_path_factory.mktemp("lan"))
    try:
        yield net
    finally:
        net.down()


@pytest.fixture(scope="session")
def lan_hosts_toml(lan: Lan) -> Path:
    return lan.write_hosts_toml(lan.base_dir / "hosts.toml")


def _installed_version(python: str, dist: str) -> str | None:
    cp = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                        capture_output=True, text=True, cwd="/")
    return cp.stdout.strip() if cp.returncode == 0 else None


@pytest.fixture(scope="session")
def lan_mapred(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> str:
    """mapred of the current tree installed (non-editable) into the LAN hosts' venv.

    The hosts cannot see the repository: a wheel of the tree as it is now is built once per
    session and installed with ``pip install --force-reinstall --no-deps``; numpy, numba and
    mmh3 at this machine's exact versions come from the laptop's pip (the hosts have no
    internet, the laptop does). Returns the hosts' python.
    """
    from mapred.cli.hosts import build_wheel, pinned_requirements

    python = lan.python
    missing = [r for r in pinned_requirements()
               if _installed_version(python, r.split("==")[0]) != r.split("==")[1]]
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if missing:
        subprocess.run([*pip, *missing], check=True, cwd="/", timeout=900)
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True, cwd="/",
                   timeout=300)
    return python


@pytest.fixture
def make_lan(
    lan_required: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[int], Lan]]:
    """make_lan(n) -> an extra LAN of n hosts, on its own subnet; all torn down after the test."""
    made: list[Lan] = []

    def make(n: int = 2) -> Lan:
        net = Lan.up(n, tmp_path_factory.mktemp("lanx"))
        made.append(net)
        return net

    try:
        yield make
    finally:
        for net in made:
            net.down()
