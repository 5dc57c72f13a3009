"""hosts setup's pure parts: wheel directories made once per platform, and its advice."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mapred.cli import hosts as cli_hosts
from mapred.cluster.hosts import Host

LINUX = {"python": [3, 11, 2], "machine": "x86_64", "libc": ["glibc", "2.36"]}


def test_a_platform_s_wheels_are_downloaded_once_whatever_the_number_of_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def slow_download(probe: dict[str, Any], dest: Path) -> None:
        calls.append(dest.name)
        time.sleep(0.3)  # long enough for every other host to ask meanwhile
        for n in range(3):
            (dest / f"dep{n}.whl").write_text("wheel")

    monkeypatch.setattr(cli_hosts, "download_wheels", slow_download)
    mapred_whl = tmp_path / "mapred-0-py3-none-any.whl"
    mapred_whl.write_text("ours")
    dirs = cli_hosts.WheelDirs(tmp_path / "platforms", mapred_whl)
    arm = {**LINUX, "machine": "aarch64"}
    seen: list[list[str]] = []
    lock = threading.Lock()

    def host(probe: dict[str, Any]) -> None:
        got = dirs.get(probe)
        with lock:
            seen.append(sorted(p.name for p in got.iterdir()))

    threads = [threading.Thread(target=host, args=(p,)) for p in [LINUX] * 5 + [arm] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["py311-aarch64-glibc-2.36", "py311-x86_64-glibc-2.36"]
    assert seen == [["dep0.whl", "dep1.whl", "dep2.whl", mapred_whl.name]] * 7


def test_a_failed_download_fails_every_host_of_that_platform_with_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(probe: dict[str, Any], dest: Path) -> None:
        time.sleep(0.1)
        raise RuntimeError("pip download failed: no wheel for numba")

    monkeypatch.setattr(cli_hosts, "download_wheels", broken)
    whl = tmp_path / "mapred.whl"
    whl.write_text("")
    dirs = cli_hosts.WheelDirs(tmp_path / "p", whl)
    errors: list[str] = []

    def host() -> None:
        try:
            dirs.get(LINUX)
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=host) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["pip download failed: no wheel for numba"] * 3


def _host(name: str, python: str = "/usr/bin/python3", python_from: str = "defaults") -> Host:
    return Host(name, f"198.18.0.{len(name) + 10}", python=python, python_from=python_from)


VENV = "/srv/mapred/venv/bin/python"


def test_setup_advice_names_the_host_tables_whose_python_overrides_defaults() -> None:
    hosts = [_host("h1"), _host("h2", python_from="host"), _host("h3")]
    advice = cli_hosts.setup_advice(hosts, {h.name: VENV for h in hosts})
    assert advice.splitlines()[1:] == [
        "put this in hosts.toml [defaults]:", f'python = "{VENV}"',
        "and in these [[host]] tables (their python overrides [defaults]):",
        f'  h2: python = "{VENV}"']


def test_setup_advice_per_host_when_the_venvs_differ_or_nothing_when_already_set() -> None:
    hosts = [_host("h1"), _host("h2")]
    advice = cli_hosts.setup_advice(hosts, {"h1": VENV, "h2": "/home/u/venv/bin/python"})
    assert advice.splitlines()[1:] == [
        "set python in these [[host]] tables of hosts.toml:", f'  h1: python = "{VENV}"',
        '  h2: python = "/home/u/venv/bin/python"']
    done = [_host("h1", python=VENV), _host("h2", python=VENV, python_from="host")]
    assert "nothing to change" in cli_hosts.setup_advice(done, {"h1": VENV, "h2": VENV})


def test_the_probe_runs_on_a_bare_python_that_has_no_mapred(tmp_path: Path) -> None:
    """hosts check/setup send the probe to hosts where mapred is not installed yet: its source
    (the workdir module's included) must import nothing of mapred."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(  # -I -S: no site-packages, no PYTHONPATH, so no mapred, no numpy
        [sys.executable, "-I", "-S", "-c", cli_hosts._probe_source(), str(tmp_path / "w"),
         "numpy"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mapred"].startswith("ERROR ModuleNotFoundError")
    assert out["numpy"].startswith("ERROR ModuleNotFoundError")
    assert out["workdir"] == str(tmp_path / "w") and out["workdir_problem"] is None
