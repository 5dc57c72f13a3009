"""``mapred runs``, ``mapred show`` and ``mapred report``: looking back at past runs.

`register(app)` adds the three commands to the main typer app. The pure formatters
(`format_runs_table`, `format_show`) return text and are tested directly; user mistakes raise
`mapred.errors.UsageError`, which the main CLI turns into exit code 2.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from mapred.engine.output import make_parents, remove_empty
from mapred.errors import UsageError
from mapred.history import runs as history
from mapred.history.report import (
    fmt_bytes,
    fmt_counter,
    fmt_duration,
    fmt_rate,
    fmt_time,
    render_report,
)
from mapred.history.runs import HostStats, Run, RunInfo, display_text
from mapred.words import plural

SHOW_WIDTH = 80

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        metavar="DIR",
        help="Directory holding mapred's run history.  "
        "[default: $XDG_STATE_HOME/mapred or ~/.local/state/mapred]",
        show_default=False,
    ),
]
RunArgument = Annotated[
    str,
    typer.Argument(
        help="Run id, or any part of one that no other run id contains (see `mapred runs`), "
        "or a run directory path.",
        metavar="RUN",
        show_default=False,
    ),
]
SHORT_HELP = {
    "runs": "List past runs, newest first.",
    "show": "Show one run: status, timing, counters, per-host figures.",
    "report": "Write a self-contained HTML report of a run.",
}


def register(app: typer.Typer) -> None:
    """Add ``runs``, ``show`` and ``report`` to ``app``."""
    for name, command in (
        ("runs", runs_command),
        ("show", show_command),
        ("report", report_command),
    ):
        app.command(name, help=_help(command), short_help=SHORT_HELP[name])(command)


def _help(command: Callable[..., None]) -> str:
    """The docstring as help text: paragraphs kept, line breaks inside them dropped (typer's
    rich mode would otherwise print each source line break)."""
    doc = inspect.cleandoc(command.__doc__ or "")
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))


# --------------------------------------------------------------------------- commands


def runs_command(
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=0, metavar="N",
                     help="Show at most N runs, newest first; 0: all."),
    ] = 20,
    state_dir: StateDirOption = None,
) -> None:
    """List past runs, newest first: id, job, corpus, start, duration, status.

    Status is succeeded, failed or interrupted as the run recorded it; running while its
    coordinator process is alive; crashed when that process died before finishing; unknown
    when the run's files are missing or damaged.
    """
    state = history.state_dir(state_dir)
    total = len(history.run_ids(state))
    infos = history.list_runs(state, limit=limit or None)
    if not infos:
        typer.echo(f"no runs recorded in {history.runs_root(state)}", err=True)
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    typer.echo(format_runs_table(infos, width))
    if total > len(infos):
        older = plural(total - len(infos), "older run")
        typer.echo(f"({older} not shown; --limit 0 shows all)", err=True)


def show_command(run: RunArgument, state_dir: StateDirOption = None) -> None:
    """Show one run: status, timing, counters and per-host figures (80 columns).

    Without summary.json (the coordinator was killed) the figures are derived from the
    run's event log.
    """
    typer.echo(format_show(history.load_run(history.state_dir(state_dir), run)))


def report_command(
    run: RunArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="HTML file to write, replaced atomically; '-' writes to stdout; missing "
            "parent directories are created.  [default: ./mapred-report-RUN_ID.html]",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Write a self-contained HTML report of a run.

    One file, viewable offline in any browser: header and counters, a timeline of every task
    attempt on every host (failures, lost hosts and backup attempts marked), throughput per host
    and the slowest shards.
    """
    loaded = history.load_run(history.state_dir(state_dir), run)
    page = render_report(loaded)
    if output is not None and str(output) == "-":
        typer.echo(page, nl=False)
        return
    target = output if output is not None else Path(f"mapred-report-{loaded.path.name}.html")
    write_atomic(target, page.encode("utf-8"))
    typer.echo(f"wrote {display_text(str(target))}", err=True)


# --------------------------------------------------------------------------- file output


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename.

    Readers see the old file or the new one, never half of one. Raises `UsageError` when the
    destination cannot be written.
    """
    if path.is_dir():
        raise UsageError(f"cannot write report to {path}: it is a directory")
    made = make_parents(path)  # removed again if the report cannot be written
    parent = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        remove_empty(made)
        raise UsageError(f"cannot write report to {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        remove_empty(made)
        raise


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # no /proc: read it the racy way (single-threaded CLI)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- formatting


def clip_left(text: str, width: int) -> str:
    """``text`` shortened to ``width`` by dropping its start (a path's end says most)."""
    text = display_text(text)
    if width <= 0:
        return ""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def clip_right(text: str, width: int) -> str:
    text = display_text(text)
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def format_runs_table(infos: Sequence[RunInfo], width: int | None = None) -> str:
    """The ``mapred runs`` table; job and corpus are shortened to fit ``width`` if given."""
    rows = [
        (
            display_text(i.run_id),
            display_text(i.job) or "-",
            display_text(i.corpus) or "-",
            fmt_time(i.started)[:16] if i.started is not None else "-",
            fmt_duration(i.duration),
            i.status,
        )
        for i in infos
    ]
    header = ("RUN ID", "JOB", "CORPUS", "STARTED", "DURATION", "STATUS")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(6)]
    if width is not None:
        fixed = widths[0] + widths[3] + widths[4] + widths[5] + 2 * 5
        room = max(width - fixed, 16)
        job = min(widths[1], max(8, room // 3), room - min(widths[2], 8))
        widths[1], widths[2] = max(job, 3), max(min(widths[2], room - max(job, 3)), 6)
    lines = []
    for r in [header, *rows]:
        cells = [
            r[0].ljust(widths[0]),
            clip_left(r[1], widths[1]).ljust(widths[1]),
            clip_left(r[2], widths[2]).ljust(widths[2]),
            r[3].ljust(widths[3]),
            r[4].rjust(widths[4]),
            r[5],
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_show(run: Run, width: int = SHOW_WIDTH) -> str:
    """``mapred show``: summary, counters, per-host figures, notes; no line exceeds ``width``."""
    parts = [_show_header(run, width), _show_counters(run), _show_hosts(run.hosts, width)]
    if run.notes:
        notes = [_wrap(n, width - 2, "  ") for n in run.notes]
        parts.append("notes\n" + "\n".join(notes))
    return "\n\n".join(p for p in parts if p)


def _field(name: str, value: str, width: int) -> str:
    return f"{name:<10}{clip_right(value, width - 10)}"


def _show_header(run: Run, width: int) -> str:
    status = run.status + ("" if run.exit_code is None else f" (exit {run.exit_code})")
    timing = f"{fmt_time(run.started)}   duration {fmt_duration(run.duration)}"
    lines = [
        _field("run", run.run_id, width),
        _field("status", status, width),
        _field("job", run.job or "-", width),
        _field("corpus", run.corpus or "-", width),
        _field("output", run.output or "-", width),
        _field("started", timing, width),
    ]
    if run.error:
        error = _wrap(run.error, width - 10, " " * 10, max_lines=8)
        lines.append("error     " + error[10:])
    return "\n".join(lines)


def _wrap(text: str, width: int, indent: str, max_lines: int = 4) -> str:
    wrapped = []
    for para in display_text(text).splitlines() or [""]:
        wrapped += textwrap.wrap(para, width, break_long_words=True) or [""]
    if len(wrapped) > max_lines:
        wrapped = wrapped[: max_lines - 1] + ["…"]
    return "\n".join(indent + w for w in wrapped)


def _show_counters(run: Run) -> str:
    names = [c for c in history.COUNTERS if c in run.counters]
    names += sorted(c for c in run.counters if c not in history.COUNTERS
                    and not c.startswith("user."))
    user = sorted(c for c in run.counters if c.startswith("user."))
    if not names and not user:
        return ""
    cells = [
        clip_right(n.replace("_", " "), 13).ljust(13)
        + clip_right(fmt_counter(n, run.counters[n]), 11).rjust(11)
        for n in names
    ]
    rows = ["  " + "  ".join(cells[i : i + 3]) for i in range(0, len(cells), 3)]
    title = "counters" + (" (derived from the event log)" if run.counters_derived else "")
    text = title + "\n" + "\n".join(rows)
    if user:  # the job's own, by their full names
        text += "\njob counters\n" + "\n".join(
            "  " + clip_right(n[len("user."):], 60).ljust(60)
            + clip_right(fmt_counter(n, run.counters[n]), 14).rjust(14) for n in user)
    return text


def _show_hosts(hosts: Sequence[HostStats], width: int) -> str:
    if not hosts:
        return ""
    lines = [
        f"{'host':<16}{'tasks':>6}{'tries':>6}{'fail':>5}{'bytes in':>11}{'busy':>9}"
        f"{'rate':>13}  state"
    ]
    for h in hosts:
        lines.append(
            f"{clip_right(h.name, 15):<16}{h.tasks:>6}{h.attempts:>6}{h.failed:>5}"
            f"{fmt_bytes(h.bytes_in):>11}{fmt_duration(h.busy_seconds):>9}"
            f"{fmt_rate(h.throughput):>13}  {'LOST' if h.lost else 'ok'}"
        )
    for h in hosts:
        if h.lost:
            lines.append(_wrap(f"{h.name} lost: {h.lost}", width - 2, "  "))
    return "\n".join(lines)
