"""``mapred hosts check`` and ``mapred hosts setup``: is every host ready, and make it so.

``check`` connects to every host of the hosts file in parallel and prints one line per host:
reachable, host key verified (its fingerprint), the Python and mapred versions (which must match
this machine's: same major.minor Python, same mapred), numpy/numba/mmh3 importable, rsync, cores,
free disk in the work dir. Every step has a deadline. Exit status: 0 every host is fine, 1 some
hosts fail, 3 no host is usable, 2 the hosts file itself is wrong.

``setup`` installs this machine's exact mapred (a wheel built from the installed package) and the
exact numpy/numba/mmh3 versions into a venv under each host's work dir, from wheels this machine
downloads for the host's Python and platform (``pip download``) and ships with rsync; the hosts
need no internet. It prints the hosts.toml ``python`` line to use.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from mapred import __version__
from mapred.limits import CHECK_TIMEOUT, SETUP_TIMEOUT
from mapred.words import plural

RUNTIME_DEPS = ("numpy", "numba", "mmh3")  # what workers import (llvmlite comes with numba)
LOW_DISK = 1 << 30

EXIT_OK, EXIT_SOME_FAIL, EXIT_NONE_USABLE = 0, 1, 3

PROBE = r"""
import json, os, shutil, subprocess, sys
out = {"python": list(sys.version_info[:3]), "executable": sys.executable}
def version(name):
    try:
        mod = __import__(name)
    except Exception as e:
        text = (str(e).splitlines() or [""])[0][:160]
        return "ERROR " + type(e).__name__ + (": " + text if text else "")
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception:
        return str(getattr(mod, "__version__", "?"))
for name in ("mapred",) + tuple(sys.argv[2:]):
    out[name] = version(name)
try:
    out["cores"] = len(os.sched_getaffinity(0))
except AttributeError:
    out["cores"] = os.cpu_count()
work = os.path.abspath(os.path.expanduser(sys.argv[1]))
out["workdir"] = work
out["workdir_problem"] = problem(work, SUBDIRS)
probe = work
while not os.path.isdir(probe):
    probe = os.path.dirname(probe)
st = os.statvfs(probe)
out["free"] = st.f_bavail * st.f_frsize
rsync = shutil.which("rsync")
if rsync:
    first = subprocess.run([rsync, "--version"], capture_output=True, text=True).stdout
    out["rsync"] = (first.split() + ["?", "?", "?"])[2]
import sysconfig, platform
out["platform"] = sysconfig.get_platform()
out["libc"] = list(platform.libc_ver())
out["machine"] = platform.machine()
print(json.dumps(out))
"""


# --- check -----------------------------------------------------------------------------------


@dataclass
class HostReport:
    name: str
    address: str
    ok: bool = False
    fields: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    probe: dict[str, Any] = field(default_factory=dict)

    def line(self, width: int) -> str:
        status = "ok  " if self.ok else "FAIL"
        parts = [f"{self.name:<{width}}", f"{self.address:<15}", status]
        parts += self.problems + self.fields + [f"({self.seconds:.1f}s)"]
        return "  ".join(parts)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_host(host: Any, *, accept_new: bool = False, timeout: float = CHECK_TIMEOUT,
               ssh_config: Path | None = None) -> HostReport:
    """Connect, verify the host key, probe versions; never raises (problems go in the report)."""
    from mapred.cluster.hosts import resolve_ssh
    from mapred.cluster.ssh.connect import connect, fingerprint
    from mapred.errors import MapredError

    t0 = time.monotonic()
    report = HostReport(host.name, host.address)
    try:
        target = resolve_ssh(host, ssh_config)
        report.address = target.hostname
        conn = connect(target, host.name, accept_new=accept_new,
                       timeout=min(timeout, target.connect_timeout))
        try:
            key = conn.transport.get_remote_server_key()
            report.fields.append(f"key {key.get_name()} {fingerprint(key)}")
            report.probe = _probe(conn, host, timeout)
        finally:
            conn.close()
        _judge(report, host)
    except MapredError as e:
        report.problems.append(e.message)
    except Exception as e:  # noqa: BLE001 - one line per host, whatever went wrong
        report.problems.append(f"{type(e).__name__}: {e}")
    report.ok = not report.problems
    report.seconds = time.monotonic() - t0
    return report


def _probe(conn: Any, host: Any, timeout: float, python: str | None = None,
           modules: tuple[str, ...] = RUNTIME_DEPS) -> dict[str, Any]:
    from mapred.cluster.diagnose import missing_python
    from mapred.cluster.ssh.connect import HostUnusable, RemoteError, exec_command

    py = python or host.python
    command = " ".join(shlex.quote(w) for w in [py, "-c", _probe_source(), host.workdir,
                                                 *modules])
    code, out, err = exec_command(conn, host.name, command, timeout=timeout, check=False)
    if code != 0:
        stderr = err.decode("utf-8", "replace")
        missing = missing_python(host.name, py, code, stderr)  # as a run's preflight says it
        if missing is not None:
            raise HostUnusable(missing)
        raise RemoteError(host.name, f"{py} (probe)", code, stderr)
    probe: dict[str, Any] = json.loads(out)
    return probe


def _probe_source() -> str:
    """PROBE, preceded by the agent's own workdir check (the same code judges both)."""
    import inspect

    from mapred.worker import fetch, workdir

    return inspect.getsource(workdir) + PROBE.replace("SUBDIRS", repr(fetch.WORKDIR_SUBDIRS))


def _judge(report: HostReport, host: Any) -> None:
    p = report.probe
    if p.get("workdir_problem"):
        report.problems.append(f"workdir refused: {p['workdir_problem']}")
    there = ".".join(map(str, p["python"]))
    if tuple(p["python"][:2]) != tuple(sys.version_info[:2]):
        report.problems.append(f"python {there} (this machine: "
                               f"{'.'.join(map(str, sys.version_info[:3]))}; major.minor must "
                               "match)")
    else:
        report.fields.append(f"python {there} ({host.python})")
    if p["mapred"] != __version__:
        report.problems.append(f"mapred {p['mapred']} for {host.python} (this machine: "
                               f"{__version__}; run `mapred hosts setup`, then use the python "
                               "it prints)")
    else:
        report.fields.append(f"mapred {p['mapred']}")
    for name in RUNTIME_DEPS:
        if str(p.get(name, "ERROR")).startswith("ERROR"):
            report.problems.append(f"{name}: {p.get(name)}")
        else:
            report.fields.append(f"{name} {p[name]}")
    if not p.get("rsync"):
        report.problems.append("rsync not installed")
    else:
        report.fields.append(f"rsync {p['rsync']}")
    report.fields.append(f"cores {host.cores or p['cores']}")
    free = int(p["free"])
    report.fields.append(f"disk {_gib(free)} free" + (" (low)" if free < LOW_DISK else ""))


def check_hosts(hosts: list[Any], **kwargs: Any) -> list[HostReport]:
    """check_host on every host in parallel, reports in the hosts' order."""
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        return list(pool.map(lambda h: check_host(h, **kwargs), hosts))


def check_exit_code(reports: list[HostReport]) -> int:
    if all(r.ok for r in reports):
        return EXIT_OK
    return EXIT_SOME_FAIL if any(r.ok for r in reports) else EXIT_NONE_USABLE


# --- setup -----------------------------------------------------------------------------------


def build_wheel(dest: Path) -> Path:
    """A wheel of the mapred this process runs (its files as they are now), written to dest."""
    import mapred
    import mapred.jobs

    version = __version__  # the code that runs here, whatever metadata lies around
    info = f"mapred-{version}.dist-info"
    files: dict[str, bytes] = {}
    mtimes: dict[str, float] = {}
    for pkg, root in (("mapred", Path(mapred.__file__).parent),
                      ("mapred/jobs", Path(mapred.jobs.__file__ or "").parent)):
        paths = root.rglob("*.py") if pkg == "mapred" else root.glob("*.py")  # with subpackages
        for path in sorted(p for p in paths if "__pycache__" not in p.parts):
            name = f"{pkg}/{path.relative_to(root).as_posix()}"
            files[name], mtimes[name] = path.read_bytes(), path.stat().st_mtime
    files[f"{info}/METADATA"] = _metadata(version).encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mapred hosts setup\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nmapred = mapred.cli.main:main\n"
    files[f"{info}/top_level.txt"] = b"mapred\n"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    files[f"{info}/RECORD"] = record.getvalue().encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"mapred-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            # Real modification times: pip keeps them, and numba's cache of compiled kernels
            # is invalidated by a source file's (mtime, size), so a fixed date would let
            # an edited kernel of the same size run stale machine code.
            stamp = time.localtime(mtimes.get(name, time.time()))
            entry = zipfile.ZipInfo(name, date_time=tuple(stamp)[:6])  # type: ignore[arg-type]
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return wheel


def _metadata(version: str) -> str:
    """Core metadata of the wheel: name, version, and the installed requirements if known."""
    lines = ["Metadata-Version: 2.1", "Name: mapred", f"Version: {version}",
             "Requires-Python: >=3.11"]
    try:
        requires = importlib.metadata.requires("mapred") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n"


def pinned_requirements() -> list[str]:
    """The worker-side dependencies at exactly this machine's versions."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_DEPS]


def platform_args(probe: dict[str, Any]) -> list[str]:
    """``pip download`` options selecting wheels for the probed host."""
    major, minor = probe["python"][:2]
    machine = probe.get("machine") or "x86_64"
    args = ["--only-binary=:all:", "--python-version", f"{major}.{minor}",
            "--implementation", "cp", "--abi", f"cp{major}{minor}"]
    libc, libc_version = (probe.get("libc") or ["", ""])[:2]
    if libc == "glibc" and libc_version:
        glibc_minor = int(libc_version.split(".")[1])
        for m in range(glibc_minor, 4, -1):
            args += ["--platform", f"manylinux_2_{m}_{machine}"]
        args += ["--platform", f"manylinux2014_{machine}", "--platform", f"manylinux2010_{machine}",
                 "--platform", f"manylinux1_{machine}"]
    else:
        args += ["--platform", str(probe.get("platform", "")).replace("-", "_").replace(".", "_")]
    return args


def download_wheels(probe: dict[str, Any], dest: Path) -> None:
    """pip download the pinned runtime dependencies for the probed host into dest."""
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "-d", str(dest), *platform_args(probe), *pinned_requirements()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    if proc.returncode != 0:
        from mapred.errors import JobError

        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise JobError(f"pip download of {', '.join(pinned_requirements())} failed: {tail}")


class WheelDirs:
    """One wheel directory per host platform (python, machine, libc) under ``root``, made once
    however many hosts ask for it at the same time; the others wait for it, or get its error."""

    def __init__(self, root: Path, mapred_wheel: Path) -> None:
        self.root, self.mapred_wheel = root, mapred_wheel
        self._lock = threading.Lock()
        self._dirs: dict[str, Future[Path]] = {}

    def get(self, probe: dict[str, Any]) -> Path:
        name = _wheel_dir_name(probe)
        with self._lock:
            fut = self._dirs.get(name)
            first = fut is None
            if fut is None:
                fut = self._dirs[name] = Future()
        if first:
            try:
                own = self.root / name
                own.mkdir(parents=True)
                download_wheels(probe, own)
                shutil.copy2(self.mapred_wheel, own / self.mapred_wheel.name)
            except BaseException as e:
                fut.set_exception(e)
                raise
            fut.set_result(own)
        return fut.result()


def setup_host(host: Any, wheels: WheelDirs, *, base_python: str | None, accept_new: bool,
               ssh_config: Path | None = None) -> str:
    """Install mapred and its runtime deps into WORKDIR/venv on host; the venv's python."""
    from mapred.cluster.hosts import resolve_ssh, rsync_remote, rsync_rsh
    from mapred.cluster.ssh.connect import RemoteError, connect, exec_command

    target = resolve_ssh(host, ssh_config)
    conn = connect(target, host.name, accept_new=accept_new)
    try:
        python = base_python or host.python
        probe = _probe(conn, host, CHECK_TIMEOUT, python=python, modules=())
        work = probe["workdir"]
        venv, remote_wheels = f"{work}/venv", f"{work}/wheels"
        own = wheels.get(probe)
        q = shlex.quote
        exec_command(conn, host.name, f"mkdir -p -m 700 {q(work)} && mkdir -p {q(remote_wheels)}")
        rsync = ["rsync", "-s", "-r", "-t", "--timeout=60", "-e",
                 rsync_rsh(target, accept_new_host_keys=accept_new), "--",
                 str(own) + "/", rsync_remote(target, remote_wheels + "/")]
        proc = subprocess.run(rsync, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
        if proc.returncode != 0:
            raise RemoteError(host.name, "rsync of the wheels", proc.returncode, proc.stderr)
        vpy = f"{venv}/bin/python"
        pip = f"{q(vpy)} -m pip install --quiet --disable-pip-version-check --no-index"
        mapred_whl = f"{remote_wheels}/mapred-{__version__}-py3-none-any.whl"
        command = (f"( test -x {q(vpy)} || {q(python)} -m venv {q(venv)} ) && "
                   f"{pip} --find-links {q(remote_wheels)} "
                   + " ".join(q(r) for r in pinned_requirements())
                   + f" && {pip} --no-deps --force-reinstall {q(mapred_whl)}")
        exec_command(conn, host.name, command, timeout=SETUP_TIMEOUT)
        exec_command(conn, host.name, f"{q(vpy)} -c 'import mapred, numba, mmh3'",
                     timeout=CHECK_TIMEOUT)
        # compile the engine's kernels into the host's cache now, not during the first run
        exec_command(conn, host.name, f"{q(vpy)} -m mapred.worker.main --warm", timeout=SETUP_TIMEOUT)
        return vpy
    finally:
        conn.close()


def setup_advice(hosts: list[Any], installed: dict[str, str]) -> str:
    """What to put in hosts.toml so that runs and ``hosts check`` use the venvs just made."""
    todo = {h.name: h for h in hosts if h.name in installed and h.python != installed[h.name]}
    if not todo:
        return "\nhosts.toml already names these interpreters: nothing to change"
    pythons = set(installed.values())
    per_host = [h for h in todo.values() if h.python_from == "host"]
    lines = []
    if len(pythons) == 1 and len(todo) > len(per_host):
        lines += ["\nput this in hosts.toml [defaults]:", f'python = "{pythons.pop()}"']
        todo = {h.name: h for h in per_host}
        if todo:
            lines.append("and in these [[host]] tables (their python overrides [defaults]):")
    else:
        lines.append("\nset python in these [[host]] tables of hosts.toml:")
    lines += [f'  {name}: python = "{installed[name]}"' for name in todo]
    return "\n".join(lines)


def _wheel_dir_name(probe: dict[str, Any]) -> str:
    libc = "-".join(probe.get("libc") or [])
    return f"py{probe['python'][0]}{probe['python'][1]}-{probe.get('machine')}-{libc}"


# --- typer commands --------------------------------------------------------------------------

HostsOpt = Annotated[Path | None, typer.Option(
    "--hosts", metavar="FILE", help="The hosts file (hosts.toml format).  "
    "[default: ./hosts.toml]", show_default=False)]
AcceptOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys", help="Trust and remember host keys not yet in known_hosts "
    "(a changed key is always refused).")]


def _cluster(hosts: Path | None) -> Any:
    from mapred.cluster.hosts import load_hosts
    from mapred.cluster.ssh.config import require_client_tools
    from mapred.errors import UsageError

    path = hosts or Path("hosts.toml")
    if not path.is_file():
        raise UsageError(f"hosts file not found: {path} (use --hosts FILE)")
    cluster = load_hosts(path)
    remote = [h for h in cluster.hosts if not h.local]
    if not remote:
        raise UsageError(f"{path}: no SSH hosts in it (only address = \"local\")")
    require_client_tools(path)
    return cluster, remote


def check_command(
    hosts: HostsOpt = None,
    accept_new_host_keys: AcceptOpt = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS",
        help="Deadline in seconds for each host's probe.")] = CHECK_TIMEOUT,
) -> None:
    """Check every host: SSH and host key, versions, numba/mmh3, rsync, cores, free disk.

    Exit status: 0 all hosts fine, 1 some hosts fail, 3 no usable host, 2 bad hosts file.
    """
    _, remote = _cluster(hosts)
    reports = check_hosts(remote, accept_new=accept_new_host_keys, timeout=timeout)
    width = max(len(r.name) for r in reports)
    for r in reports:
        typer.echo(r.line(width))
    _exit_for(check_exit_code(reports), [r.name for r in reports if not r.ok], len(reports))


def _exit_for(code: int, failed: list[str], total: int) -> None:
    """Exit status through the CLI's error path (one line on stderr, the code of its class)."""
    from mapred.errors import JobError, NoHostsError

    if code == EXIT_NONE_USABLE:
        raise NoHostsError(f"no usable host: all {total} failed")
    if code == EXIT_SOME_FAIL:
        raise JobError(f"{len(failed)} of {plural(total, 'host')} failed: {', '.join(failed)}")


def setup_command(
    hosts: HostsOpt = None,
    accept_new_host_keys: AcceptOpt = False,
    python: Annotated[str | None, typer.Option(
        "--python", metavar="PATH", help="Interpreter on the hosts to create the venv with.  "
        "[default: the hosts file's python]", show_default=False)] = None,
) -> None:
    """Install this machine's mapred and its dependencies into WORKDIR/venv on every host.

    Wheels are downloaded here for each host's Python and platform and shipped with rsync: the
    hosts need no internet access. Prints the hosts.toml line to use afterwards.
    """
    _, remote = _cluster(hosts)
    with tempfile.TemporaryDirectory(prefix="mapred-wheels-") as tmp:
        wheels = WheelDirs(Path(tmp) / "platforms", build_wheel(Path(tmp)))
        results: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(remote)))) as pool:
            futures = {h.name: pool.submit(setup_host, h, wheels, base_python=python,
                                           accept_new=accept_new_host_keys) for h in remote}
            for name, fut in futures.items():
                try:
                    results[name] = fut.result()
                    typer.echo(f"{name}: mapred {__version__} and "
                               f"{', '.join(pinned_requirements())} installed: {results[name]}")
                except Exception as e:  # noqa: BLE001 - one line per host
                    typer.echo(f"{name}: FAIL  {getattr(e, 'message', None) or e}")
    typer.echo(setup_advice(remote, results))
    if len(results) < len(remote):
        _exit_for(EXIT_SOME_FAIL if results else EXIT_NONE_USABLE,
                  [h.name for h in remote if h.name not in results], len(remote))


def register(app: Any) -> None:
    """Add ``mapred hosts check`` and ``mapred hosts setup`` to the typer app."""
    hosts_app = typer.Typer(name="hosts", help="Check or prepare the SSH hosts of a hosts.toml.",
                            no_args_is_help=True, rich_markup_mode=None)
    hosts_app.command("check", short_help="Check every host: SSH, versions, rsync, cores, "
                      "free disk.")(check_command)
    hosts_app.command("setup", short_help="Install this mapred and its dependencies on every "
                      "host.")(setup_command)
    app.add_typer(hosts_app, name="hosts")


