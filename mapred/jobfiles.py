"""A job is its module plus the modules it imports from its own directory.

``from helpers import tokenize`` in ``jobs/mine.py`` works locally because the job's directory is
on ``sys.path`` when it is loaded, and on SSH hosts because those modules travel with it (mrjob's
``--py-files``, found by themselves). They are found by reading the job's imports, not by running
it (``modulefinder``, with only the job's directory on its path: the standard library and
installed packages are never looked at): ``helpers.py``, packages (``pkg/__init__.py``,
``pkg/sub.py``...) and what they import in turn. A module imported in a way no reader can see
(``importlib.import_module(name)``) can be named in the job module's ``MAPRED_FILES = ["x.py"]``
(paths relative to the job's directory); it is read from the source, not run.

On a host a job is a directory ``WORKDIR/jobs/DIGEST/`` with the files at their relative paths and
``MANIFEST.json`` (each file's sha256); DIGEST is the manifest's own sha256, so a changed file is
a new job, numba's on-disk cache (keyed by source path) stays valid across runs, and a directory
whose files no longer match is removed and shipped again (``verify``). Worker-side: this module
imports only the standard library.
"""

from __future__ import annotations

import ast
import hashlib
import json
import modulefinder
import re
from dataclasses import dataclass
from pathlib import Path

from mapred.errors import JobLoadError

MANIFEST = "MANIFEST.json"
MAX_FILES = 200
MAX_BYTES = 16 << 20
_REL = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


@dataclass(frozen=True)
class JobFiles:
    """The job module (``path``, named ``main`` on hosts) and its local modules, as paths
    relative to ``root``."""

    path: Path
    root: Path
    main: str
    files: tuple[tuple[str, str], ...]  # (relative path, sha256), sorted

    def manifest(self) -> bytes:
        return manifest_bytes(self.main, dict(self.files))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.manifest()).hexdigest()

    def local_name(self, rel: str) -> Path:
        """The file here that ``rel`` (a name on hosts) was copied from."""
        return self.path if rel == self.main else self.root / rel

    def localize(self, text: str, shipped: str) -> str:
        """``text`` (an error from a host) naming this machine's files instead of their copies
        on the host; ``shipped`` is the job module's path there."""
        home = shipped.rsplit("/", 1)[0]
        for rel, _ in sorted(self.files, key=lambda f: -len(f[0])):
            text = text.replace(f"{home}/{rel}", str(self.local_name(rel)))
        return text

    def helpers(self) -> dict[str, str]:
        """relative path -> sha256 of the modules besides the job module itself."""
        return {rel: digest for rel, digest in self.files if rel != self.main}


def manifest_bytes(main: str, files: dict[str, str]) -> bytes:
    return json.dumps({"main": main, "files": dict(sorted(files.items()))},
                      sort_keys=True).encode()


def find(job: Path) -> JobFiles:
    """The job module and every module it imports from its own directory, recursively."""
    job = job.resolve()
    root = job.parent
    finder = modulefinder.ModuleFinder(path=[str(root)])
    try:
        finder.run_script(str(job))
    except (OSError, ImportError, SyntaxError, ValueError) as e:
        raise JobLoadError(f"{job}: cannot read the modules it imports: {e}") from None
    for name in finder.badmodules:  # a local module modulefinder could not parse
        _check_syntax(root.joinpath(*name.split(".")))
    found: set[Path] = set()
    for module in finder.modules.values():
        file = getattr(module, "__file__", None)
        path = Path(file).resolve() if file else None
        if path is not None and path != job and path.is_relative_to(root):
            found.add(path)
    found.update(_declared(job, root))
    rels = {p.relative_to(root).as_posix() for p in found}
    for rel in rels:
        if not _REL.fullmatch(rel):
            raise JobLoadError(f"{root / rel}: a module the job imports has a name that cannot "
                               "be shipped (letters, digits, '_', '.', '-' only)")
    if len(rels) + 1 > MAX_FILES:
        raise JobLoadError(f"{job}: imports {len(rels)} modules from its directory (at most "
                           f"{MAX_FILES - 1}); make the rest an installed package")
    main = _main_name(job)
    files = {main: _sha256(job)}
    for rel in rels:
        files[rel] = _sha256(root / rel)
    total = sum((root / r).stat().st_size for r in rels) + job.stat().st_size
    if total > MAX_BYTES:
        raise JobLoadError(f"{job}: the job and the modules it imports hold {total} bytes (at "
                           f"most {MAX_BYTES}); data belongs in the corpus or a parameter")
    return JobFiles(job, root, main, tuple(sorted(files.items())))


def _check_syntax(base: Path) -> None:
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        try:
            source = path.read_bytes()
        except OSError:
            continue
        try:
            compile(source, str(path), "exec")
        except SyntaxError as e:
            raise JobLoadError(f"{path}:{e.lineno}: syntax error in a module the job "
                               f"imports: {e.msg}") from None
        except ValueError as e:
            raise JobLoadError(f"{path}: cannot compile a module the job imports: {e}") from None


def _main_name(job: Path) -> str:
    """The job module's name on a host: a plain identifier (numba's cache names files by it)."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", job.stem)[:64] or "job"
    return f"{stem}.py"


def _declared(job: Path, root: Path) -> set[Path]:
    """Files named in the job module's ``MAPRED_FILES`` (a literal list of relative paths)."""
    try:
        tree = ast.parse(job.read_bytes(), str(job))
    except (OSError, SyntaxError, ValueError):
        return set()
    out: set[Path] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and
                                                t.id == "MAPRED_FILES" for t in node.targets):
            try:
                names = ast.literal_eval(node.value)
            except ValueError:
                raise JobLoadError(f"{job}:{node.lineno}: MAPRED_FILES must be a literal list "
                                   "of paths relative to the job's directory") from None
            for name in names if isinstance(names, (list, tuple)) else [names]:
                path = (root / str(name)).resolve()
                if not path.is_relative_to(root) or not path.is_file():
                    raise JobLoadError(f"{job}:{node.lineno}: MAPRED_FILES names {name!r}, "
                                       "which is not a file in the job's directory")
                out.add(path)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(directory: Path) -> bool:
    """A shipped job directory is whole: its manifest hashes to its name, and every file it
    lists has its hash. Worker side (the agent lists only such directories)."""
    try:
        data = (directory / MANIFEST).read_bytes()
        if hashlib.sha256(data).hexdigest() != directory.name:
            return False
        doc = json.loads(data)
        for rel, digest in doc["files"].items():
            path = directory / rel
            if not _REL.fullmatch(rel) or ".." in rel.split("/") or path.is_symlink():
                return False
            if _sha256(path) != digest:
                return False
        return isinstance(doc.get("main"), str) and doc["main"] in doc["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
