"""Worker-side modules import only the standard library, numpy, numba, llvmlite, mmh3 and each
other: an allowlist checked on the source (imports inside functions included), so a host never
needs the coordinator's libraries and a new import is refused before it ships."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mapred"
# the worker side, in one place: these packages whole, and these modules shared by both sides
WORKER_PACKAGES = ("kernels", "worker")
WORKER_MODULES = ("job", "jobfiles", "warmup", "shards", "modes", "paths", "words", "units",
                  "errors", "limits", "wire")
THIRD_PARTY = {"numpy", "numba", "llvmlite", "mmh3"}


def worker_side() -> dict[str, Path]:
    """Dotted name -> file of every worker-side module that exists."""
    out = {f"mapred.{m}": PACKAGE / f"{m}.py" for m in WORKER_MODULES
           if (PACKAGE / f"{m}.py").exists()}
    for pkg in WORKER_PACKAGES:
        for f in sorted((PACKAGE / pkg).rglob("*.py")):
            parts = f.relative_to(PACKAGE).with_suffix("").parts
            name = ".".join(("mapred", *parts)).removesuffix(".__init__")
            out[name] = f
    out["mapred"] = PACKAGE / "__init__.py"
    return out


BUNDLED_JOBS = "mapred.jobs"  # the installed jobs/ directory (examples: they import mapred.kernels)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from a import b``: a, and a.b if a
    module of mapred)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module.split(".")[0] == "mapred":
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")
                                 ).with_suffix(".py").exists()
                             or (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")
                                 / "__init__.py").exists())
    return found


def refused(imported: str, allowed: set[str]) -> bool:
    top = imported.split(".")[0]
    if top == "mapred":
        return imported not in allowed and imported != BUNDLED_JOBS
    return top not in sys.stdlib_module_names and top not in THIRD_PARTY and top != "__future__"


@pytest.mark.parametrize("name", sorted(worker_side()))
def test_a_worker_side_module_imports_only_the_allowlist(name: str) -> None:
    side = worker_side()
    bad = sorted(i for i in imports_of(side[name]) if refused(i, set(side)))
    assert bad == [], f"{name} imports {bad}: not worker side"


def test_the_allowlist_can_refuse() -> None:
    side = set(worker_side())
    assert refused("paramiko", side) and refused("mapred.engine.runner", side)
    assert not refused("numba.core", side) and not refused("json", side)
    assert not refused("mapred.kernels.table", side)
    cli = next(p for p in (PACKAGE / "cli.py", PACKAGE / "cli" / "main.py") if p.exists())
    assert any(refused(i, side) for i in imports_of(cli))


def test_importing_the_worker_side_loads_no_coordinator_library() -> None:
    """The same at run time: what the modules import when loaded, transitively."""
    forbidden = ["fabric", "paramiko", "invoke", "typer", "tqdm", "click", "prometheus_client"]
    mods = sorted(worker_side())
    code = (f"import sys\nfor m in {mods!r}: __import__(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
