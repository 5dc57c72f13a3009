"""The ``mapred`` command line: the only place that prints to the user or exits.

Every ``MapredError`` becomes one line on stderr (plus its detail, e.g. a user's traceback) and the
exit code of its class; see ``errors.py`` and the README's table of exit codes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mapred import __version__
from mapred.errors import Interrupted, MapredError, UsageError

app = typer.Typer(
    name="mapred",
    help="Run map/reduce jobs over large text corpora on this machine or a few LAN hosts.\n\n"
    "Exit codes: 0 success, 1 the job failed, 2 usage or configuration error, 3 no usable "
    "hosts, 75 another run holds the output lock, 130/143 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("mapred")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mapred {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run map/reduce jobs over large text corpora on this machine or a few LAN hosts.

    Exit codes: 0 success, 1 the job failed, 2 usage or configuration error, 3 no usable hosts, 75 another run holds the output lock, 130/143 interrupted.
    """  # noqa: E501 - typer keeps docstring line breaks


def parse_size(text: str) -> int:
    """``"64M"`` -> 67108864; plain integers are bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise UsageError(f"not a size: {text!r} (examples: 65536, 64K, 64M, 1G)") from None
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return value


@app.command()
def run(
    job: Annotated[str, typer.Argument(
        help="Job module: a path (jobs/wordcount.py) or a bundled job's name (wordcount).",
        show_default=False)],
    corpus: Annotated[Path, typer.Argument(
        help="Input: a file, or a directory walked recursively (hidden names skipped).",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output directory: part-NNNNN files and _SUCCESS.",
        show_default=False)],
    hosts: Annotated[Optional[Path], typer.Option(
        "--hosts", help="hosts.toml naming the machines to use.",
        show_default="./hosts.toml if it exists, else this machine with all its cores")] = None,
    reducers: Annotated[Optional[int], typer.Option(
        "--reducers", "-r", min=1, help="Number of reducers (part files).",
        show_default="total cores")] = None,
    param: Annotated[Optional[list[str]], typer.Option(
        "-p", "--param", help="KEY=VALUE passed to the job's init(params); repeatable.",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output directory (atomically).")] = False,
    shard_size: Annotated[str, typer.Option(
        "--shard-size", help="Target shard size in bytes, or with K/M/G; 'auto' gives each "
        "core about three shards, at most 64M.")] = "auto",
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", min=1, help="Attempts per task before the job fails.")] = 4,
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", help="Where run journals and locks live.",
        show_default="$XDG_STATE_HOME/mapred or ~/.local/state/mapred")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Run JOB over CORPUS and write OUTPUT/part-NNNNN and OUTPUT/_SUCCESS.

    The output appears only when the whole job succeeded; a failed or interrupted run leaves no output (or the old one untouched).
    """  # noqa: E501 - typer keeps docstring line breaks
    from mapred import job as jobmod
    from mapred.runner import RunConfig

    _setup_logging(quiet, verbose)
    cfg = RunConfig(
        job=jobmod.resolve(job),
        corpus=corpus,
        output=output,
        state=_state(state_dir),
        params=jobmod.parse_params(param or []),
        reducers=reducers,
        shard_size=0 if shard_size == "auto" else parse_size(shard_size),
        overwrite=overwrite,
        max_attempts=max_attempts,
        argv=tuple(sys.argv),
    )
    summary = _execute(cfg, hosts, quiet)
    if not quiet:
        c = summary.counters
        typer.echo(
            f"mapred: {c.get('map_bytes_in', 0):,} bytes in {summary.shards} shards -> "
            f"{c.get('reduce_keys_out', 0):,} keys in {summary.reducers} parts, "
            f"{summary.output}/ in {summary.seconds:.2f}s (run {summary.run_id})",
            err=True,
        )


def _state(explicit: Path | None) -> Path:
    from mapred import paths

    return paths.state_dir(explicit)


def _execute(cfg: Any, hosts_file: Path | None, quiet: bool) -> Any:
    from mapred.progress import make_progress
    from mapred.runner import Runner

    transports = _transports(hosts_file, cfg)
    progress = make_progress(quiet)
    return Runner(cfg, transports, progress).execute()


def _transports(hosts_file: Path | None, cfg: Any) -> list[Any]:
    from mapred.transport import LocalTransport

    if hosts_file is None and Path("hosts.toml").is_file():
        hosts_file = Path("hosts.toml")
    cluster = _load_cluster(hosts_file)
    transports = []
    for host in cluster.hosts:
        if not host.local:
            raise UsageError(
                f"{cluster.source}: host {host.name!r} is a remote host; running on SSH hosts "
                "is not implemented yet (only address = \"local\")")
        cores = host.cores or os.cpu_count() or 1
        log_dir = cfg.state / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        transports.append(LocalTransport(host.name, cores, log_dir, _worker_env(), host.memory))
    return transports


def _load_cluster(hosts_file: Path | None) -> Any:
    from mapred import hosts

    if hosts_file is None:
        return hosts.embedded_default()
    return hosts.load_hosts(hosts_file)


def _worker_env() -> dict[str, str]:
    from mapred import paths

    env = dict(os.environ)
    umask = os.umask(0o022)
    os.umask(umask)
    env["MAPRED_UMASK"] = oct(umask)
    env.setdefault("NUMBA_CACHE_DIR", str(paths.numba_cache_dir(__version__)))
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="mapred: %(levelname)s: %(message)s",
                        stream=sys.stderr)


def _register_extras() -> None:
    try:
        from mapred import cli_runs
    except ImportError:  # pragma: no cover - during development
        return
    cli_runs.register(app)


_register_extras()


def main() -> None:
    """Entry point: run the app, turn mapred errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except MapredError as e:
        _report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _report(Interrupted(2))
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _report(Interrupted(2))
        sys.exit(130)
    except Exception as e:
        show = getattr(e, "show", None)  # click's (or typer's bundled click's) usage errors
        if show is None:
            raise
        show()
        sys.exit(2 if getattr(e, "exit_code", 1) == 2 else 1)


def _report(e: MapredError) -> None:
    print(f"mapred: error: {e.message}", file=sys.stderr)
    if e.detail:
        print(e.detail, file=sys.stderr)


if __name__ == "__main__":
    main()
