"""The house limits on code size (issue 10), checked on the source: no module of the package over
600 lines, no class over 300, and short functions (a median of at most 10 lines)."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mapred"
MAX_MODULE, MAX_CLASS, MAX_MEDIAN_FUNCTION = 600, 300, 10


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_over_the_limit() -> None:
    over = {str(p.relative_to(PACKAGE)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE}
    assert over == {}


def test_no_class_is_over_the_limit() -> None:
    over = {f"{p.relative_to(PACKAGE)}:{c.name}": c.end_lineno - c.lineno + 1
            for p in modules() for c in ast.walk(ast.parse(p.read_text()))
            if isinstance(c, ast.ClassDef) and c.end_lineno - c.lineno + 1 > MAX_CLASS}
    assert over == {}


def test_functions_are_short() -> None:
    lengths = [f.end_lineno - f.lineno + 1 for p in modules()
               for f in ast.walk(ast.parse(p.read_text()))
               if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert statistics.median(lengths) <= MAX_MEDIAN_FUNCTION
