"""One self-contained HTML report of a run: header, task timeline, per-host throughput, stragglers.

`render_report(run)` returns the whole page as a string: CSS, JS and SVG inline, no fonts, images
or requests at view time. A Content-Security-Policy allows only this module's own style and
script (by hash), so even a string that escaped escaping could not run. Every string that comes
from the run (file names, host names, errors) goes through `_e`: made valid UTF-8 and free of
control / bidi-override characters by `history.display_text`, then HTML-escaped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from mapred.history.html import (  # noqa: F401 - fmt_count: re-exported
    SCRIPT,
    STYLE,
    _clip,
    _csp_hash,
    _e,
    _num,
    counter_label,
    fmt_count,
    fmt_counter,
)
from mapred.history.runs import (  # noqa: F401 - Startup, Transfer: re-exported
    COUNTERS,
    Attempt,
    HostStats,
    Run,
    Shard,
    Startup,
    Transfer,
)
from mapred.history.timeline import (  # noqa: F401 - the texts: re-exported
    _timeline,
    attempt_text,
    startup_text,
    transfer_text,
)
from mapred.units import fmt_bytes, fmt_duration, fmt_rate, fmt_time  # noqa: F401 - re-exported
from mapred.words import plural


def render_report(run: Run) -> str:
    """The report of ``run`` as one self-contained HTML document (valid UTF-8)."""
    script, style = SCRIPT, STYLE  # read at call time: tests swap SCRIPT for a broken one
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src {_csp_hash(style)}; script-src {_csp_hash(script)}"
    )
    title = f"mapred {run.run_id} · {run.job or 'run'} · {run.status}"
    body = "".join(
        [
            _header(run),
            _error(run),
            _cards(run),
            _notes(run),
            _timeline(run),
            '<div class="cols wrap">',
            _throughput(run.hosts),
            _host_table(run.hosts),
            "</div>",
            _slowest(run.attempts),
            _footer(run),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{style}</style>\n</head>\n"
        f"<body><main>\n{body}</main>\n<script>{script}</script>\n</body></html>\n"
    )


def _header(run: Run) -> str:
    exit_code = "" if run.exit_code is None else f" (exit {run.exit_code})"
    rows = [
        ("job", run.job or "-"),
        ("corpus", run.corpus or "-"),
        ("output", run.output or "-"),
        ("started", fmt_time(run.started)),
        ("duration", fmt_duration(run.duration) + (" so far" if run.status == "running" else "")),
    ]
    meta = "".join(f"<span>{k}</span><b>{_e(v)}</b>" for k, v in rows)
    return (
        f"<header><h1>{_e(os.path.basename(run.job) or 'mapred run')}</h1>"
        f'<span class="badge {_e(run.status)}">{_e(run.status)}{_e(exit_code)}</span>'
        f'<span class="muted">run {_e(run.run_id)}</span></header>'
        f'<div class="meta">{meta}</div>\n'
    )


def _cards(run: Run) -> str:
    names = [c for c in COUNTERS if c in run.counters]
    names += sorted(c for c in run.counters if c not in COUNTERS)
    cards = []
    for name in names:
        value = run.counters[name]
        warn = " warn" if name in ("retries", "backups", "hosts_lost") and value else ""
        cards.append(
            f'<div class="card{warn}"><div class="v">{_e(fmt_counter(name, value))}</div>'
            f'<div class="k">{_e(counter_label(name))}</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>\n' if cards else ""


def _error(run: Run) -> str:
    """The run's error line and, below it, its detail (a user's traceback, where the worker log is)."""
    if not run.error:
        return ""
    detail = f'<pre class="detail">{_e(run.detail)}</pre>' if run.detail else ""
    return f'<section class="error"><h2>Error</h2><pre>{_e(run.error)}</pre>{detail}</section>\n'


def _notes(run: Run) -> str:
    if not run.notes:
        return ""
    items = "".join(f"<li>{_e(n)}</li>" for n in run.notes)
    return f'<section class="notes"><h2>Notes</h2><ul>{items}</ul></section>\n'


def _footer(run: Run) -> str:
    argv = " ".join(run.argv)
    cmd = f"<div>command: <code>{_e(argv)}</code></div>" if argv else ""
    return (
        f"<footer>{cmd}<div>run directory: <code>{_e(run.path)}</code> · report generated "
        f"{_e(fmt_time(time.time()))} by mapred</div></footer>\n"
    )


def _throughput(hosts: tuple[HostStats, ...]) -> str:
    width, label_w, bar_w, row = 560, 140, 280, 28
    rates = [h.throughput or 0.0 for h in hosts]
    top = max(rates + [1e-9])
    parts = []
    for i, (h, rate) in enumerate(zip(hosts, rates, strict=True)):
        y = 8 + i * row
        w = max(rate / top * bar_w, 1 if rate else 0)
        lost = " lost" if h.lost else ""
        value = fmt_rate(h.throughput) + (" · lost" if h.lost else "")
        parts.append(
            f'<g><text class="tp-label" x="0" y="{y + 15}">{_e(_clip(h.name, 17))}</text>'
            f'<rect class="tp-bar{lost}" x="{label_w}" y="{y + 2}" width="{_num(w)}" '
            f'height="{row - 8}" rx="3"/><text class="tp-value" x="{_num(label_w + w + 6)}" '
            f'y="{y + 15}">{_e(value)}</text><title>{_e(h.name)}: {_e(fmt_bytes(h.bytes_in))} in '
            f"{_e(fmt_duration(h.busy_seconds))} busy</title></g>"
        )
    height = 8 + len(hosts) * row + 4
    svg = (
        f'<svg id="throughput" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="throughput per host">{"".join(parts)}</svg>'
    )
    return (
        f'<section><h2>Throughput per host</h2>{svg}<p class="muted">bytes read per busy '
        "second of a task slot (total task time, all attempts)</p></section>"
    )


def _host_table(hosts: tuple[HostStats, ...]) -> str:
    head = (
        "<tr><th>host</th><th>address</th><th class=n>cores</th><th class=n>tasks</th>"
        "<th class=n>attempts</th><th class=n>failed</th><th class=n>bytes in</th>"
        "<th class=n>busy</th><th>state</th></tr>"
    )
    rows = []
    for h in hosts:
        state = f'<span class="tag lost">lost</span>{_e(h.lost)}' if h.lost else "ok"
        rows.append(
            f"<tr><td>{_e(h.name)}</td><td>{_e(h.address or '-')}</td>"
            f"<td class=n>{_e(h.cores if h.cores is not None else '-')}</td>"
            f"<td class=n>{h.tasks:,}</td><td class=n>{h.attempts:,}</td>"
            f"<td class=n>{h.failed:,}</td><td class=n>{_e(fmt_bytes(h.bytes_in))}</td>"
            f"<td class=n>{_e(fmt_duration(h.busy_seconds))}</td><td>{state}</td></tr>"
        )
    return f"<section><h2>Hosts</h2><table>{head}{''.join(rows)}</table></section>"


SLOWEST = 15


def slowest_shards(attempts: Iterable[Attempt], n: int = SLOWEST) -> list[list[Attempt]]:
    """Map tasks by time from their first attempt's start to their result, slowest first.

    Each entry is the task's attempts in start order; a task with no ``ok`` attempt counts
    until its last attempt ended.
    """
    by_task: dict[str, list[Attempt]] = {}
    for a in attempts:
        if a.kind == "map":
            by_task.setdefault(a.task, []).append(a)
    return sorted(by_task.values(), key=_elapsed, reverse=True)[:n]


def _winner(group: list[Attempt]) -> Attempt | None:
    return next((a for a in group if a.outcome == "ok"), None)


def _elapsed(group: list[Attempt]) -> float:
    won = _winner(group)
    end = won.end if won else max(a.end for a in group)
    return end - min(a.start for a in group)


def _slowest(attempts: tuple[Attempt, ...]) -> str:
    groups = slowest_shards(attempts)
    if not groups:
        return ""
    head = (
        "<tr><th>shard file</th><th class=n>byte range</th><th class=n>size</th>"
        "<th>task</th><th>host</th><th class=n>to result</th><th class=n>attempt</th>"
        "<th class=n>rate</th><th>notes</th></tr>"
    )
    return (
        f'<section class="wrap"><h2>Slowest shards</h2><table>{head}'
        + "".join(_shard_row(g) for g in groups)
        + "</table>"
        '<p class="muted">time to result: from the first attempt\'s start to the winning '
        "attempt's end (retries and backups included); click a row to find it above</p>"
        "</section>\n"
    )


def _shard_cells(shard: Shard) -> tuple[str, str, int]:
    """(file, byte range, size) cells; a shard packing several files names the first."""
    if shard.files == 1:
        return shard.path, f"{shard.start:,}–{shard.end:,}", shard.size
    more = plural(shard.files - 1, "more file")
    return f"{shard.path} + {more}", f"{shard.files} files", shard.size


def _shard_row(group: list[Attempt]) -> str:
    won = _winner(group)
    shown = won or group[-1]
    shard = next((a.shard for a in group if a.shard is not None), None)
    path, rng, size = ("-", "-", None) if shard is None else _shard_cells(shard)
    rate = size / shown.duration if size and shown.duration > 0 else None
    tags = []
    retries = sum(1 for a in group if not a.backup) - 1
    if retries > 0:
        tags.append(f'<span class="tag">{retries} retr{"y" if retries == 1 else "ies"}</span>')
    if any(a.backup for a in group):
        backup_won = won is not None and won.backup
        tags.append(f'<span class="tag">{"backup won" if backup_won else "backup"}</span>')
    if won is None:
        tags.append('<span class="tag bad">no result</span>')
    return (
        f'<tr data-task="{_e(shown.task)}"><td class="file" title="{_e(path)}">{_e(path)}</td>'
        f"<td class=n>{_e(rng)}</td><td class=n>{_e(fmt_bytes(size))}</td>"
        f"<td>{_e(shown.task)}</td><td>{_e(shown.host)}</td>"
        f"<td class=n>{_e(fmt_duration(_elapsed(group)))}</td>"
        f"<td class=n>{_e(fmt_duration(shown.duration))}</td><td class=n>{_e(fmt_rate(rate))}</td>"
        f"<td>{''.join(tags)}</td></tr>"
    )
