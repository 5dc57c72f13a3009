"""Loading a job module and the job contract.

Two tiers (see the README for complete examples):

* **plain Python** — ``mapper(record)`` (or ``mapper(record, ctx)``) yields ``(key, value)`` pairs;
  ``reducer(key, values)`` yields ``(key, value)`` pairs; optional ``combiner(key, values)`` with the
  reducer's signature, run on the map side. Records are lines as ``bytes`` without the final ``\\n``
  (a ``\\r`` before it is kept). Keys are ``bytes`` or ``str`` (UTF-8) and reach the reducer as bytes.
* **numba** — ``scan(buf, pos, starts, ends, values, *extra)``, an ``@njit`` kernel that fills up to
  ``len(starts)`` key spans of ``buf`` with int64 values and returns ``(n, new_pos)``; the module names
  its aggregation in ``AGGREGATE`` ("sum", "min" or "max"). The engine aggregates, combines,
  partitions and reduces in compiled code.

Both tiers may define ``init(params)``, called once per worker with the ``-p KEY=VALUE`` parameters
as a ``dict[str, str]``; in the numba tier it may return a tuple of extra arguments for ``scan``.
An exception raised by ``init`` is a usage error (exit 2): raise ``ValueError("...")`` with a message
that names the parameter.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mapred.errors import JobLoadError, UsageError

AGGREGATES = ("sum", "min", "max")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "jobs"


@dataclass(frozen=True)
class MapContext:
    """Passed as the second argument to a two-argument ``mapper``."""

    path: str  # the input file, relative to the corpus root
    offset: int = 0  # byte offset of the current record in that file (plain files only)


@dataclass
class Job:
    """A loaded job module, ready to run on a worker."""

    path: Path
    module: ModuleType
    tier: str  # "plain" or "numba"
    mapper: Callable[..., Any] | None = None
    mapper_takes_ctx: bool = False
    reducer: Callable[..., Any] | None = None
    combiner: Callable[..., Any] | None = None
    scan: Callable[..., Any] | None = None
    aggregate: str = "sum"
    extra: tuple[Any, ...] = field(default_factory=tuple)


def bundled_jobs() -> list[str]:
    """Names of the jobs shipped with mapred."""
    return sorted(p.stem for p in _bundled_dir().glob("*.py") if not p.stem.startswith("_"))


def _bundled_dir() -> Path:
    try:
        import mapred.jobs as pkg  # installed layout: jobs/ maps to mapred.jobs

        return Path(pkg.__file__ or "").resolve().parent
    except ImportError:
        return BUNDLED_DIR


def resolve(spec: str) -> Path:
    """Turn ``JOB`` from the command line (a path or a bundled name) into a module path."""
    path = Path(spec)
    if path.suffix == ".py" or os.sep in spec or path.exists():
        if not path.is_file():
            raise UsageError(f"job module not found: {spec}")
        return path.resolve()
    candidate = _bundled_dir() / f"{spec}.py"
    if candidate.is_file():
        return candidate
    names = ", ".join(bundled_jobs())
    raise UsageError(f"no job module or bundled job named {spec!r} (bundled: {names})")


def check_syntax(path: Path) -> None:
    """Compile the module's source without running it; a syntax error names file and line."""
    try:
        source = path.read_bytes()
    except OSError as e:
        raise JobLoadError(f"cannot read job module {path}: {e.strerror}") from e
    try:
        compile(source, str(path), "exec")
    except SyntaxError as e:
        raise JobLoadError(f"{path}:{e.lineno}: syntax error in job module: {e.msg}") from None
    except ValueError as e:  # e.g. null bytes
        raise JobLoadError(f"{path}: cannot compile job module: {e}") from None


def user_traceback(exc: BaseException, path: Path) -> str:
    """The traceback of ``exc`` starting at the first frame inside the user's module."""
    frames = list(traceback.extract_tb(exc.__traceback__))
    target = str(path)
    for i, frame in enumerate(frames):
        if frame.filename == target:
            frames = frames[i:]
            break
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def load(path: Path, params: dict[str, str]) -> Job:
    """Import the job module at ``path`` and check it against the contract."""
    module = _import(path)
    if hasattr(module, "scan"):
        job = _numba_job(path, module)
    elif hasattr(module, "mapper") or hasattr(module, "reducer"):
        job = _plain_job(path, module)
    else:
        raise JobLoadError(
            f"{path}: job module defines neither mapper()/reducer() (plain tier) "
            "nor scan() (numba tier)"
        )
    _run_init(job, params)
    return job


def _import(path: Path) -> ModuleType:
    name = "mapred_job_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JobLoadError(f"{path}: not a loadable Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise JobLoadError(f"{path}:{e.lineno}: syntax error in job module: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any error of user code at import
        raise JobLoadError(
            f"{path}: importing the job module raised {type(e).__name__}: {e}",
            detail=user_traceback(e, path),
        ) from None
    return module


def _plain_job(path: Path, module: ModuleType) -> Job:
    for name in ("mapper", "reducer"):
        if not callable(getattr(module, name, None)):
            raise JobLoadError(f"{path}: plain job module has no {name}() function")
    combiner = getattr(module, "combiner", None)
    if combiner is not None and not callable(combiner):
        raise JobLoadError(f"{path}: combiner is not a function")
    return Job(
        path=path,
        module=module,
        tier="plain",
        mapper=module.mapper,
        mapper_takes_ctx=_positional_count(module.mapper) >= 2,
        reducer=module.reducer,
        combiner=combiner,
    )


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in sig.parameters.values())


def _numba_job(path: Path, module: ModuleType) -> Job:
    aggregate = getattr(module, "AGGREGATE", None)
    if aggregate not in AGGREGATES:
        raise JobLoadError(
            f"{path}: numba job module must set AGGREGATE to one of {', '.join(AGGREGATES)}"
            f" (found {aggregate!r})"
        )
    if not callable(module.scan):
        raise JobLoadError(f"{path}: scan is not a function")
    return Job(path=path, module=module, tier="numba", scan=module.scan, aggregate=aggregate)


def _run_init(job: Job, params: dict[str, str]) -> None:
    init = getattr(job.module, "init", None)
    if init is None:
        return
    try:
        result = init(dict(params))
    except ValueError as e:  # the documented way to reject a parameter: no traceback
        raise JobLoadError(f"{job.path}: init(params) failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - user code
        raise JobLoadError(
            f"{job.path}: init(params) raised {type(e).__name__}: {e}",
            detail=user_traceback(e, job.path),
        ) from None
    if job.tier == "numba" and result is not None:
        job.extra = tuple(result) if isinstance(result, (tuple, list)) else (result,)


def parse_params(items: list[str]) -> dict[str, str]:
    """``["n=2", "pattern=a=b"]`` -> ``{"n": "2", "pattern": "a=b"}``."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"parameter must be KEY=VALUE: {item!r}")
        params[key] = value
    return params
