"""Fixtures for tests against the real test LAN (tests/lanlib.py).

* ``lan``: a session-wide LAN of 3 sshd hosts (h1..h3).  Tests that inject failures into it
  must call ``lan.heal()`` (or ``host.heal()``) in a ``finally``.
* ``lan_hosts_toml``: a mapred ``hosts.toml`` for ``lan``.
* ``make_lan(n)``: a factory for extra LANs, torn down when the test ends.
* ``lan_required``: skip (or, with ``CI`` set, fail) when this machine cannot run a LAN.

Every test under tests/integration/ gets the ``integration`` marker.
"""

from __future__ import annotations

import os
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
