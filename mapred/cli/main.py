"""The ``mapred`` command line: the only place that prints to the user or exits.

Every ``MapredError`` becomes one line on stderr (plus its detail, e.g. a user's traceback) and the
exit code of its class; see ``errors.py`` and the README's table of exit codes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mapred import __version__
from mapred.errors import Interrupted, MapredError, UsageError

app = typer.Typer(
    name="mapred",
    help="Run map/reduce jobs over large text corpora on this machine or a few LAN hosts.\n\n"
    "Exit codes: 0 success, 1 the job failed, 2 usage or configuration error, 3 no usable "
    "hosts, 75 another run holds the output lock, 130/143/129 interrupted (INT/TERM/HUP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help, not rich's boxes: at 80 columns rich cut option names, printed <bool>
    # on flags and took "[default: ...]" in help texts for markup
    rich_markup_mode=None,
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

    Exit codes: 0 success, 1 the job failed, 2 usage or configuration error, 3 no usable
    hosts, 75 another run holds the output lock, 130/143/129 interrupted (INT/TERM/HUP).
    """


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


@app.command(short_help="Run a job over a corpus; write OUT/part-NNNNN and OUT/_SUCCESS.")
def run(
    job: Annotated[str, typer.Argument(
        help="Job module: a path (jobs/wordcount.py) or a bundled job's name (wordcount).",
        metavar="JOB", show_default=False)],
    corpus: Annotated[Path, typer.Argument(
        help="Input: a file, or a directory walked recursively (hidden names skipped).",
        metavar="CORPUS", show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", metavar="OUT", help="Output directory: part-NNNNN files and _SUCCESS; "
        "missing parent directories are created.", show_default=False)],
    hosts: Annotated[Path | None, typer.Option(
        "--hosts", metavar="FILE", help="hosts.toml naming the machines to use.  [default: "
        "./hosts.toml if it exists, else this machine with all its cores]",
        show_default=False)] = None,
    reducers: Annotated[int | None, typer.Option(
        "--reducers", "-r", min=1, metavar="R", help="Number of reducers (part files); by "
        "default the total cores, but at most one per shard.", show_default=False)] = None,
    param: Annotated[list[str] | None, typer.Option(
        "-p", "--param", metavar="KEY=VALUE", help="A parameter for the job's init(params); "
        "repeatable.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output directory (atomically), if mapred "
        "wrote it.")] = False,
    shard_size: Annotated[str, typer.Option(
        "--shard-size", metavar="SIZE", help="Target shard size in bytes, or with K/M/G; 'auto' "
        "gives each core about three shards, at most 64M.")] = "auto",
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", min=1, metavar="N", help="Attempts per task before the job "
        "fails.")] = 4,
    accept_new_host_keys: Annotated[bool, typer.Option(
        "--accept-new-host-keys", help="Trust and record the key of a host not yet in "
        "known_hosts (a changed key is always refused).")] = False,
    resume_run: Annotated[bool, typer.Option(
        "--resume", help="Continue the last unfinished run on this output (after a crash): "
        "its committed map tasks whose input and job are unchanged are not run again.")] = False,
    speculation: Annotated[bool, typer.Option(
        "--speculation/--no-speculation", help="Start a backup attempt of straggling tasks "
        "on idle workers; the first to finish wins.")] = True,
    inline: Annotated[bool, typer.Option(
        "--inline", help="Debug: map and reduce in this one process, in order, so print() "
        "and breakpoint() work (no workers, retries, hosts or journal).")] = False,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Read what symlinks pointing outside the corpus point to "
        "(without it such a link is refused).")] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", metavar="DIR", help="Where run journals and locks live.  [default: "
        "$XDG_STATE_HOME/mapred or ~/.local/state/mapred]", show_default=False)] = None,
    deadline: Annotated[str | None, typer.Option(
        "--deadline", metavar="DURATION", help="Stop the run cleanly (exit 1, no output) when "
        "it takes longer than this: 90s, 30m, 2h, 1h30m, 1d, or seconds.",
        show_default=False)] = None,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", metavar="FILE", help="Write Prometheus text-format metrics here at "
        "the end (atomically; for node_exporter's textfile collector).",
        show_default=False)] = None,
    log_format: Annotated[str, typer.Option(
        "--log-format", metavar="text|json", help="stderr format: 'text', or 'json' (one JSON "
        "object per line; progress as events, no bar).")] = "text",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Run JOB over CORPUS and write OUT/part-NNNNN and OUT/_SUCCESS.

    The output appears only when the whole job succeeded; a failed or interrupted run leaves
    no output (or the old one untouched).
    """
    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format must be 'text' or 'json', not {log_format!r}")
    _setup_logging(quiet, verbose, log_format)
    metrics = _Metrics(metrics_file, job)
    if inline:
        _refuse_with_inline(hosts=hosts, resume=resume_run, metrics_file=metrics_file,
                            deadline=deadline)
    try:
        _run(job, corpus, output, hosts, reducers, param, overwrite, shard_size, max_attempts,
             state_dir, deadline, quiet, metrics, speculation,
             resume_run, accept_new_host_keys, follow_symlinks, inline)
    except MapredError as e:
        metrics.write(e.exit_code, None)
        raise
    except KeyboardInterrupt:
        metrics.write(130, None)
        raise


def _run(job: str, corpus: Path, output: Path, hosts: Path | None, reducers: int | None,
         param: list[str] | None, overwrite: bool, shard_size: str, max_attempts: int,
         state_dir: Path | None, deadline: str | None, quiet: bool,
         metrics: _Metrics, speculation: bool, resume_run: bool,
         accept_new_host_keys: bool, follow_symlinks: bool, inline: bool = False) -> None:
    from mapred import job as jobmod
    from mapred.engine.runner import RunConfig

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
        deadline=parse_duration(deadline) if deadline else None,
        speculation=speculation,
        resume=resume_run,
        argv=tuple(sys.argv),
        hosts_file=_hosts_file(hosts),
        follow_symlinks=follow_symlinks,
    )
    if inline:
        from mapred.engine.inline import run_inline

        summary = run_inline(cfg)
    else:
        runner = _runner(cfg, hosts, quiet, accept_new_host_keys)
        try:
            summary = runner.execute()
        finally:
            if runner.summary_data is not None:
                metrics.write(int(runner.summary_data.get("exit_code", 1)), runner.summary_data)
    log.info("%s", _summary_line(summary),
             extra={"event": "run_finished", "fields": {"seconds": round(summary.seconds, 3),
                                                         "output": str(summary.output)}})
    from mapred.engine.runner import user_counters

    counters = user_counters(summary.counters)
    if counters:
        log.info("counters: %s", ", ".join(f"{k[len('user.'):]} {v:,}"
                                           for k, v in counters.items()),
                 extra={"event": "counters", "fields": {"counters": counters}})


def _refuse_with_inline(**given: Any) -> None:
    for name, value in given.items():
        if value:
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} does not go with --inline (a debugging run in this one "
                             "process, on this machine, with no journal)")


def _summary_line(summary: Any) -> str:
    """``45.2 MiB in 12 shards -> 1,234 keys in 2 parts, out/ in 3.21 s (run ...)``: sizes in
    the units of the progress bar (input bytes as on disk; gzip input also decompressed)."""
    from mapred.units import fmt_bytes, fmt_duration
    from mapred.words import plural

    c = summary.counters
    size = fmt_bytes(c.get("input_bytes", 0))
    if c.get("input_gzip"):
        size += f" ({fmt_bytes(c.get('map_bytes_in', 0))} decompressed)"
    return (f"{size} in {plural(summary.shards, 'shard')} -> "
            f"{plural(c.get('reduce_keys_out', 0), 'key')} in "
            f"{plural(summary.reducers, 'part')}, {summary.output}/ in "
            f"{fmt_duration(summary.seconds)} (run {summary.run_id})")


class _Metrics:
    """Writes the --metrics-file once, with the run's summary when there is one."""

    def __init__(self, path: Path | None, job: str) -> None:
        self.path, self.job, self.written = path, Path(job).stem, False

    def write(self, code: int, summary: dict[str, Any] | None) -> None:
        if self.path is None or self.written:
            return
        from mapred.engine import metrics

        self.written = True
        try:
            metrics.write(self.path, self.job, code, summary)
        except OSError as e:
            log.error("cannot write metrics file %s: %s", self.path, e.strerror)


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile("".join(rf"(?:(?P<{u}>{_NUMBER}){u})?" for u in _DURATION_UNITS))


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``, or a compound of those
    units, largest first and each at most once: ``"1h30m"``, ``"1d2h"``, ``"1h30m15s"``.
    Spaces and case are ignored; numbers may have decimals (``"1.5h"``)."""
    t = "".join(text.split()).lower()
    if re.fullmatch(_NUMBER, t):
        value = float(t)
    else:
        m = _DURATION.fullmatch(t)
        if m is None or not any(m.groups()):
            raise UsageError(f"not a duration: {text!r} (examples: 90, 90s, 30m, 2h, 1d, "
                             "1h30m, 1h30m15s: units d, h, m, s, largest first)")
        value = sum(float(n) * _DURATION_UNITS[u] for u, n in m.groupdict().items() if n)
    if not value > 0 or not math.isfinite(value):
        raise UsageError(f"duration must be positive and finite: {text!r}")
    return value


def _state(explicit: Path | None) -> Path:
    from mapred import paths

    return paths.state_dir(explicit)


def _runner(cfg: Any, hosts_file: Path | None, quiet: bool, accept_new: bool) -> Any:
    transports = _transports(hosts_file, cfg, accept_new)  # first: workers start at once
    from mapred.engine.progress import make_progress
    from mapred.engine.runner import Runner

    return Runner(cfg, transports, make_progress(quiet))


def _hosts_file(given: Path | None) -> Path | None:
    """``--hosts``, else ``./hosts.toml`` if there is one, else None (this machine alone)."""
    if given is None and Path("hosts.toml").is_file():
        return Path("hosts.toml")
    return given


def _transports(hosts_file: Path | None, cfg: Any, accept_new: bool = False) -> list[Any]:
    from mapred.cluster.transport import LocalTransport

    cluster = _load_cluster(_hosts_file(hosts_file))
    remote = [h for h in cluster.hosts if not h.local]
    if remote:
        if len(remote) != len(cluster.hosts):
            raise UsageError(f"{cluster.source}: mixing address = \"local\" with SSH hosts is "
                             "not supported yet: list this machine by its address instead")
        from mapred.cluster.ssh.config import require_client_tools
        from mapred.cluster.ssh.remote import open_transports

        require_client_tools(cluster.source)
        return list(open_transports(remote, run_state_dir=cfg.state, shuffle=cluster.shuffle,
                                    accept_new_host_keys=accept_new))
    transports = []
    for host in cluster.hosts:
        cores = host.cores or os.cpu_count() or 1
        log_dir = cfg.state / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        local = LocalTransport(host.name, cores, log_dir, _worker_env(), host.memory,
                               scratch_root=cfg.state / "scratch")
        local.prespawn()
        transports.append(local)
    return transports


def _load_cluster(hosts_file: Path | None) -> Any:
    from mapred.cluster import hosts

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


def _setup_logging(quiet: bool, verbose: bool, fmt: str = "text") -> None:
    from mapred.engine import logs

    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    logs.setup(level, fmt)


def _register_extras() -> None:
    from mapred.cli import hosts as cli_hosts
    from mapred.cli import runs as cli_runs

    cli_hosts.register(app)
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
        code = 2 if getattr(e, "exit_code", 1) == 2 else 1
        if _argv_log_format() == "json":
            from mapred.engine import logs

            message = e.format_message() if hasattr(e, "format_message") else str(e)
            logs.emit_error(message, None, code, "json")
        else:
            show()
        sys.exit(code)


def _report(e: MapredError) -> None:
    from mapred.engine import logs

    logs.emit_error(e.message, e.detail, e.exit_code, _argv_log_format())


def _argv_log_format() -> str | None:
    """--log-format from argv, for errors raised before the options are parsed."""
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--log-format" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--log-format="):
            return a.split("=", 1)[1]
    return None


if __name__ == "__main__":
    main()
