"""Worker-side modules import only the standard library, numpy, numba and mmh3."""

from __future__ import annotations

import subprocess
import sys

WORKER_SIDE = ["mapred.worker", "mapred.job", "mapred.shards", "mapred.partition",
               "mapred.mapper", "mapred.reducer", "mapred.kernels", "mapred.paths", "mapred.workdir",
               "mapred.rsyncd", "mapred.warmup",
               "mapred.fetch", "mapred.agent", "mapred.agentfs", "mapred.modes"]
FORBIDDEN = ["fabric", "paramiko", "invoke", "typer", "tqdm", "click", "prometheus_client"]


def test_worker_side_modules_do_not_import_coordinator_libraries():
    code = (f"import sys\nfor m in {WORKER_SIDE!r}: __import__(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_forbidden_check_can_fail():
    code = "import sys, mapred.cli\nprint('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "True"
