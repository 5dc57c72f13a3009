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
that names the parameter. A module may declare its parameters, ``PARAMS = {"n": "2", "pattern":
None}`` (name -> default, None for a required one): an unknown or missing key is then a usage error
and ``init`` gets the defaults filled in. Without ``PARAMS``, a key ``init`` never looked at is
reported as a warning (``Job.warnings``), and a job without ``init`` takes no parameters at all.

Loading also checks what can be checked before any data: the functions' signatures, and a numba-tier
``scan`` that is not compiled (a warning). ``def_line`` names the line a message points at.
"""

from __future__ import annotations

import difflib
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
from mapred.words import plural

AGGREGATES = ("sum", "min", "max")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "jobs"


USER_COUNTER = "user."  # prefix of the job's own counters among a task's counters


@dataclass(frozen=True)
class MapContext:
    """Passed as the second argument to a two-argument ``mapper``."""

    path: str  # the input file, relative to the corpus root
    offset: int = 0  # byte offset of the current record in that file (plain files only)
    counts: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the user counter ``name`` (``ctx.count("bad_lines")``). Counted once per
        committed map task: a retried, lost or backed-up attempt's counts never add up twice;
        shown in the summary, ``mapred show``, the report and the metrics."""
        if not isinstance(name, str) or not name or len(name) > 100 or not name.isprintable():
            raise ValueError(f"a counter name is a printable str of 1 to 100 characters, not "
                             f"{name!r:.60}")
        if type(n) is not int:
            raise TypeError(f"ctx.count({name!r}, n): n must be an int, not {type(n).__name__}")
        self.counts[name] = self.counts.get(name, 0) + n


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
    warnings: list[str] = field(default_factory=list)  # for the user, shown once per run


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
    _check_signatures(job)
    return job


def def_line(fn: Any) -> int:
    """The line of ``fn``'s ``def`` in its module (after its decorators); 0 if unknown."""
    fn = getattr(fn, "py_func", fn)  # a numba dispatcher: the Python function it compiles
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return int(getattr(getattr(fn, "__code__", None), "co_firstlineno", 0))
    for i, text in enumerate(lines):
        if text.lstrip().startswith(("def ", "async def ")):
            return first + i
    return first


def _import(path: Path) -> ModuleType:
    name = "mapred_job_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JobLoadError(f"{path}: not a loadable Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    home = str(path.parent)  # the job's own modules (`from helpers import ...`), as for a script
    if home not in sys.path:
        sys.path.insert(0, home)
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
    job = Job(path=path, module=module, tier="numba", scan=module.scan, aggregate=aggregate)
    if not hasattr(module.scan, "py_func"):  # not a numba dispatcher
        job.warnings.append(
            f"{path}:{def_line(module.scan)}: scan() is not compiled with @njit: it runs as "
            "plain Python, tens of times slower (add `from numba import njit` and "
            "@njit(cache=True, nogil=True) above it)")
    return job


def _check_signatures(job: Job) -> None:
    """Each function of the job must accept the arguments the engine passes it."""
    if job.tier == "numba":
        extra = len(job.extra)
        more = f" plus the {plural(extra, 'value')} init(params) returned" if extra else ""
        _check_call(job, "scan", job.scan, 5 + extra, f"(buf, pos, starts, ends, values){more}")
        return
    _check_call(job, "mapper", job.mapper, 2 if job.mapper_takes_ctx else 1,
                "(line) or mapper(line, ctx)")
    _check_call(job, "reducer", job.reducer, 2, "(key, values)")
    if job.combiner is not None:
        _check_call(job, "combiner", job.combiner, 2, "(key, values)")


def _check_call(job: Job, name: str, fn: Any, nargs: int, shape: str) -> None:
    target = getattr(fn, "py_func", fn)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin or C function: nothing to go by
        return
    try:
        sig.bind(*range(nargs))
    except TypeError:
        raise JobLoadError(f"{job.path}:{def_line(target)}: {name}{sig} cannot be called "
                           f"as {name}{shape}") from None


def _run_init(job: Job, params: dict[str, str]) -> None:
    declared = _declared_params(job)
    if declared is not None:
        params = _with_defaults(job, declared, params)
    init = getattr(job.module, "init", None)
    if init is None:
        if params and declared is None:
            raise JobLoadError(f"{job.path}: this job takes no parameters (it has no "
                               f"init(params)), got -p {', '.join(sorted(params))}")
        return
    _check_call(job, "init", init, 1, "(params)")
    given = dict(params) if declared is not None else _ReadTracking(params)
    try:
        result = init(given)
    except ValueError as e:  # the documented way to reject a parameter: no traceback
        raise JobLoadError(f"{job.path}: init(params) failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - user code
        raise JobLoadError(
            f"{job.path}: init(params) raised {type(e).__name__}: {e}",
            detail=user_traceback(e, job.path),
        ) from None
    if isinstance(given, _ReadTracking):
        job.warnings += given.unread_warnings(job.path)
    if job.tier == "numba" and result is not None:
        job.extra = tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _declared_params(job: Job) -> dict[str, str | None] | None:
    declared = getattr(job.module, "PARAMS", None)
    if declared is None:
        return None
    if not isinstance(declared, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in declared.items()):
        raise JobLoadError(f"{job.path}: PARAMS must be a dict of parameter names to default "
                           "values: strings, or None for a required parameter")
    return declared


def _with_defaults(job: Job, declared: dict[str, str | None], params: dict[str, str],
                   ) -> dict[str, str]:
    """``params`` checked against the declared ones, with the defaults of those not given."""
    known = ", ".join(declared) or "none"
    for key in sorted(params):
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), 1)
            hint = f": did you mean {close[0]!r}?" if close else ""
            raise JobLoadError(f"{job.path}: unknown parameter {key!r}{hint} (this job's "
                               f"parameters: {known})")
    for key, default in declared.items():
        if default is None and key not in params:
            raise JobLoadError(f"{job.path}: missing parameter: {key} (use -p {key}=VALUE)")
    return {**{k: v for k, v in declared.items() if v is not None}, **params}


class _ReadTracking(dict[str, str]):
    """The parameters as an ``init`` without ``PARAMS`` sees them: records the keys it reads.

    Reading them all (iterating, copying, ``**params``) counts as reading every key."""

    def __init__(self, params: dict[str, str]) -> None:
        super().__init__(params)
        self.read: set[str] = set()
        self.all_read = False

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().setdefault(key, default)

    def __iter__(self) -> Any:
        self.all_read = True
        return super().__iter__()

    def keys(self) -> Any:
        self.all_read = True
        return super().keys()

    def items(self) -> Any:
        self.all_read = True
        return super().items()

    def values(self) -> Any:
        self.all_read = True
        return super().values()

    def copy(self) -> dict[str, str]:
        self.all_read = True
        return dict(super().items())

    def unread_warnings(self, path: Path) -> list[str]:
        if self.all_read:
            return []
        seen = ", ".join(sorted(self.read)) or "none"
        return [f"{path}: parameter -p {key}=... was given but init(params) never read it (it "
                f"read: {seen}); declare PARAMS = {{...}} in the job to refuse unknown keys"
                for key in sorted(set(dict.keys(self)) - self.read)]


def parse_params(items: list[str]) -> dict[str, str]:
    """``["n=2", "pattern=a=b"]`` -> ``{"n": "2", "pattern": "a=b"}``."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"parameter must be KEY=VALUE: {item!r}")
        params[key] = value
    return params
