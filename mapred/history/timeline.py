"""The report's task timeline: one SVG lane per worker slot, each attempt a bar with its staging,
fetch and collect segments, worker start-ups and idle gaps, phases, axis and legend."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mapred.history.html import _clip, _e, _num
from mapred.history.runs import (
    Attempt,
    HostStats,
    Marker,
    Run,
    Startup,
    Transfer,
)
from mapred.units import fmt_bytes, fmt_duration
from mapred.words import plural

WIDTH = 1320
LABEL_W = 170
RIGHT_PAD = 24
AXIS_H = 22
PHASE_H = 18
LANE_PAD = 5
MIN_IDLE_PX = 3  # a slot's idle gap narrower than this is not drawn
DETAIL_LINES = 8  # of a failed attempt's traceback, in its hover text


def _row_height(slots: int) -> int:
    for limit, height in ((6, 18), (12, 14), (24, 10), (48, 7)):
        if slots <= limit:
            return height
    return 5


def _ticks(span: float) -> float:
    """A round tick step giving roughly 6-12 ticks over ``span`` seconds."""
    steps = (
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        900,
        1800,
        3600,
        7200,
        10800,
        21600,
        43200,
        86400,
    )
    return next((s for s in steps if span / s <= 12), 86400 * math.ceil(span / 86400 / 12))


def _tick_label(t: float, step: float) -> str:
    if step < 1:
        return f"{t:.2f}".rstrip("0").rstrip(".") + "s"
    whole = int(round(t))
    if step < 60 and whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _Scale:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0 = t0
        self.span = max(t1 - t0, 1e-3)
        self.width = WIDTH - LABEL_W - RIGHT_PAD

    def x(self, ts: float) -> float:
        return LABEL_W + (ts - self.t0) / self.span * self.width


def _timeline(run: Run) -> str:
    if not run.hosts:
        return '<section><h2>Timeline</h2><p class="muted">No task ran.</p></section>\n'
    ends = [a.end for a in run.attempts] + [m.ts for m in run.markers]
    starts = [_first(a) for a in run.attempts] + [m.ts for m in run.markers]
    starts += [w.start for w in run.startups]
    ends += [w.end for w in run.startups]
    t0 = run.started if run.started is not None else min(starts, default=0.0)
    t1 = max(ends + [run.ended if run.ended is not None else t0])
    scale = _Scale(min([t0] + starts), t1)
    top = AXIS_H + PHASE_H
    lanes: list[str] = []
    y: float = top
    for i, host in enumerate(run.hosts):
        lane, height = _lane(
            i,
            host,
            [a for a in run.attempts if a.host == host.name],
            y,
            scale,
            [m for m in run.markers if m.kind == "host_lost"],
            [w for w in run.startups if w.host == host.name],
        )
        lanes.append(lane)
        y += height
    total = y + 4
    svg = (
        f'<svg id="gantt" viewBox="0 0 {WIDTH} {total}" width="100%" role="img" '
        f'aria-label="task timeline">{_patterns()}{_axis(scale, y)}{"".join(lanes)}'
        f"{_phases(run.markers, scale, top, y)}</svg>"
    )
    hint = "Hover an attempt for details; click it to highlight every attempt of its task."
    return (
        f"<section><h2>Timeline: every task attempt, one lane per host</h2>{_legend()}{svg}"
        f'<div id="detail">{hint}</div></section>\n'
    )


def _patterns() -> str:
    def stripes(pid: str, color: str, cross: bool = False) -> str:
        extra = f'<rect width="6" height="1.6" fill="{color}"/>' if cross else ""
        return (
            f'<pattern id="{pid}" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="2.2" height="6" fill="{color}"/>'
            f"{extra}</pattern>"
        )

    return (
        "<defs>"
        + stripes("p-failed", "#d32f2f")
        + stripes("p-killed", "#6b7280")
        + stripes("p-lost", "#111", cross=True)
        + stripes("p-start", "#b9c2cd")
        + "</defs>"
    )


def _legend() -> str:
    def swatch(cls: str, extra: str = "") -> str:
        return (
            f'<svg width="26" height="12"><g class="att {cls}"><rect class="bar" x="1" y="1" '
            f'width="24" height="10"/>{extra}</g></svg>'
        )

    def overlay(kind: str) -> str:
        return f'<rect class="ov-{kind}" x="1" y="1" width="24" height="10"/>'

    items = [
        (swatch("map ok"), "map"),
        (swatch("reduce ok"), "reduce"),
        (swatch("map failed", overlay("failed")), "failed"),
        (swatch("map killed", overlay("killed")), "killed"),
        (swatch("map lost", overlay("lost")), "lost with its host"),
        (swatch("map backup ok", '<path class="mk-backup" d="M1 1h6l-6 6z"/>'), "backup attempt"),
        (swatch("map unfinished"), "never finished"),
        (
            '<svg width="26" height="12"><rect class="seg stage" x="1" y="1" width="24" '
            'height="10"/></svg>',
            "transfer: input staged, map outputs fetched",
        ),
        (
            '<svg width="26" height="12"><rect class="seg collect" x="1" y="1" width="24" '
            'height="10"/></svg>',
            "outputs checked, part file collected",
        ),
        (
            '<svg width="26" height="12"><g class="wait start"><rect x="1" y="1" width="24" '
            'height="10"/></g></svg>',
            "worker starting",
        ),
        (
            '<svg width="26" height="12"><g class="wait idle"><line x1="1" y1="6" x2="25" '
            'y2="6"/></g></svg>',
            "slot idle",
        ),
        (
            '<svg width="12" height="12"><line class="lostline" x1="6" y1="0" x2="6" y2="12"/>'
            "</svg>",
            "host lost",
        ),
    ]
    return (
        '<div class="legend">'
        + "".join(f"<span>{sw}{_e(label)}</span>" for sw, label in items)
        + "</div>"
    )


def _axis(scale: _Scale, bottom: float) -> str:
    step = _ticks(scale.span)
    parts = []
    for k in range(int(scale.span / step) + 1):
        t = k * step
        x = scale.x(scale.t0 + t)
        anchor = "start" if k == 0 else "middle"
        parts.append(
            f'<line class="grid" x1="{_num(x)}" y1="{AXIS_H - 4}" x2="{_num(x)}" '
            f'y2="{_num(bottom)}"/>'
            f'<text class="tick" x="{_num(x)}" y="{AXIS_H - 8}" text-anchor="{anchor}">'
            f"{_e(_tick_label(t, step))}</text>"
        )
    parts.append(
        f'<text class="tick" x="{LABEL_W - 10}" y="{AXIS_H - 8}" '
        'text-anchor="end">time since start</text>'
    )
    return "".join(parts)


def _phases(markers: Iterable[Marker], scale: _Scale, top: float, bottom: float) -> str:
    parts = []
    for m in markers:
        if m.kind != "phase":
            continue
        x = _num(scale.x(m.ts))
        when = fmt_duration(m.ts - scale.t0)
        near_end = scale.x(m.ts) + 7 * len(m.label) + 8 > WIDTH
        lx, anchor = (scale.x(m.ts) - 4, "end") if near_end else (scale.x(m.ts) + 4, "start")
        parts.append(
            f'<g><line class="phase" x1="{x}" y1="{AXIS_H}" x2="{x}" y2="{_num(bottom)}"/>'
            f'<text class="phase-label" x="{_num(lx)}" y="{AXIS_H + 13}" text-anchor="{anchor}">'
            f"{_e(m.label)}</text><title>{_e(m.label)} phase from +{_e(when)}</title></g>"
        )
    return "".join(parts)


def _lane(
    index: int,
    host: HostStats,
    attempts: list[Attempt],
    y: float,
    scale: _Scale,
    lost: list[Marker],
    startups: list[Startup],
) -> tuple[str, float]:
    """One host's lane (``data-host``), one sub-row per slot; returns (svg, height)."""
    rows = max([host.slots, 1] + [w.slot + 1 for w in startups])
    rh = _row_height(rows)
    height = rows * rh + 2 * LANE_PAD
    height = max(height, 40)
    bg = "lane-bg alt" if index % 2 else "lane-bg"
    sub = f"{plural(host.cores, 'core')} · " if host.cores else ""
    sub += plural(host.tasks, "task")
    sub_cls = "lane-sub lost" if host.lost else "lane-sub"
    sub = "LOST · " + sub if host.lost else sub
    cy = y + height / 2
    parts = [
        f'<g class="lane" data-host="{_e(host.name)}">',
        f'<rect class="{bg}" x="0" y="{_num(y)}" width="{WIDTH}" height="{_num(height)}"/>',
        f'<text class="lane-name" x="10" y="{_num(cy - 2)}">{_e(_clip(host.name, 20))}'
        f"<title>{_e(host.name)} {_e(host.address)}</title></text>",
        f'<text class="{sub_cls}" x="10" y="{_num(cy + 12)}">{_e(sub)}</text>',
    ]
    parts += _waits(host.name, startups, attempts, y + LANE_PAD, rh, scale)
    parts += [_bar(a, y + LANE_PAD + a.slot * rh, rh, scale) for a in attempts]
    for m in lost:
        if m.host == host.name:
            x = _num(scale.x(m.ts))
            parts.append(
                f'<g><line class="lostline" x1="{x}" y1="{_num(y)}" x2="{x}" '
                f'y2="{_num(y + height)}"/><text class="lostmark" x="{_num(scale.x(m.ts) + 4)}" '
                f'y="{_num(y + 12)}">✕ lost</text><title>{_e(host.name)} lost at '
                f"+{_e(fmt_duration(m.ts - scale.t0))}: {_e(m.label)}</title></g>"
            )
    parts.append("</g>")
    return "".join(parts), height


def _bar(a: Attempt, y: float, rh: int, scale: _Scale) -> str:
    x = scale.x(a.start)
    w = scale.x(a.end) - x
    w = max(w - 1 if w > 4 else w, 1.5)  # a 1px gap keeps back-to-back attempts apart
    h = max(rh - 2, 2)
    geom = f'x="{_num(x)}" y="{_num(y + 1)}" width="{_num(w)}" height="{h}"'
    cls = f"att {_e(a.kind)} {_e(a.outcome)}" + (" backup" if a.backup else "")
    overlay = (
        f'<rect class="ov-{a.outcome}" {geom}/>'
        if a.outcome in ("failed", "killed", "lost")
        else ""
    )
    mw, mh = _num(min(6.0, w)), _num(min(6.0, h))
    marker = (
        f'<path class="mk-backup" d="M{_num(x)} {_num(y + 1)}h{mw}l-{mw} {mh}z"/>'
        if a.backup
        else ""
    )
    before = "".join(_segment(t, a.kind, y + 1, h, scale) for t in a.transfers
                     if t.kind == "stage")
    inside = "".join(_segment(t, a.kind, y + 1, h, scale, (x, x + w)) for t in a.transfers
                     if t.kind != "stage")
    return (
        f'<g class="{cls}" data-task="{_e(a.task)}">{before}<rect class="bar" {geom}/>{inside}'
        f"{overlay}{marker}<title>{_e(attempt_text(a, scale.t0))}</title></g>"
    )


def _first(a: Attempt) -> float:
    """When the attempt began taking time: its staging's start, else its worker's."""
    return a.staging.start if a.staging is not None else a.start


def _segment(t: Transfer, kind: str, y: float, h: float, scale: _Scale,
             within: tuple[float, float] | None = None) -> str:
    """A transfer of an attempt: staging before its bar, fetch and collect ``within`` it."""
    x0, x1 = scale.x(t.start), scale.x(t.end)
    if within is not None:
        lo, hi = within
        x0, x1 = max(lo, min(x0, hi - 0.5)), max(lo, min(x1, hi))
    return (
        f'<rect class="seg {_e(t.kind)}" x="{_num(x0)}" y="{_num(y)}" '
        f'width="{_num(max(x1 - x0, 0.5))}" height="{_num(h)}">'
        f"<title>{_e(transfer_text(t, kind))}</title></rect>"
    )


def transfer_text(t: Transfer, kind: str = "map") -> str:
    """One line on a transfer of a ``kind`` attempt (plain text; escape before use)."""
    took = fmt_duration(t.duration)
    if t.kind == "fetch":
        return f"map outputs fetched from other hosts: {fmt_bytes(t.nbytes)} in {took}"
    if t.kind == "collect":
        return f"{'part file collected' if kind == 'reduce' else 'map outputs checked'} in {took}"
    how = {
        "in place": "input read in place",
        "cached": "input already cached on the host",
        "sent": f"input sent to the host: {fmt_bytes(t.nbytes)}",
        "copied": f"input copied from host {t.peer or '?'}",
    }.get(t.how)
    if how is None:  # no end recorded: the attempt ended while its input was being staged
        return f"staging its input: {took}, never finished"
    return f"{how}, staged in {took}"


def _waits(host: str, startups: list[Startup], attempts: list[Attempt], y: float, rh: int,
           scale: _Scale) -> list[str]:
    """Worker start-ups, and the gaps where a slot idled between them and its attempts."""
    h = max(rh - 2, 2)
    parts = []
    busy: dict[int, list[tuple[float, float]]] = {}
    for w in startups:
        x = scale.x(w.start)
        parts.append(
            f'<g class="wait start"><rect x="{_num(x)}" y="{_num(y + w.slot * rh + 1)}" '
            f'width="{_num(max(scale.x(w.end) - x, 0.5))}" height="{h}"/>'
            f"<title>{_e(startup_text(w, scale.t0))}</title></g>"
        )
        busy.setdefault(w.slot, []).append((w.start, w.end))
    for a in attempts:
        busy.setdefault(a.slot, []).append((_first(a), a.end))
    for slot, spans in sorted(busy.items()):
        spans.sort()
        reach = spans[0][1]
        for start, end in spans[1:]:
            if scale.x(start) - scale.x(reach) >= MIN_IDLE_PX:
                parts.append(_idle(host, slot, reach, start, y + slot * rh, rh, scale))
            reach = max(reach, end)
    return parts


def _idle(host: str, slot: int, t0: float, t1: float, y: float, rh: int, scale: _Scale) -> str:
    x0, x1, cy = scale.x(t0), scale.x(t1), y + rh / 2
    text = (
        f"{host} slot {slot} idle for {fmt_duration(t1 - t0)}: +{fmt_duration(t0 - scale.t0)}"
        f" → +{fmt_duration(t1 - scale.t0)}, waiting for a task it could run"
    )
    return (
        f'<g class="wait idle"><rect x="{_num(x0)}" y="{_num(y)}" width="{_num(x1 - x0)}" '
        f'height="{rh}"/><line x1="{_num(x0)}" y1="{_num(cy)}" x2="{_num(x1)}" y2="{_num(cy)}"/>'
        f"<title>{_e(text)}</title></g>"
    )


def startup_text(w: Startup, t0: float) -> str:
    """The hover text of a worker start-up (plain text; escape before use)."""
    state = f"ready after {fmt_duration(w.end - w.start)}" if w.ready else (
        f"never ready ({fmt_duration(w.end - w.start)})"
    )
    return (
        f"worker starting on {w.host}, slot {w.slot}: +{fmt_duration(w.start - t0)}, {state}\n"
        "process start, imports, job init and warm-up (a cold numba cache compiles here)"
    )


def attempt_text(a: Attempt, t0: float) -> str:
    """The hover text of one attempt (plain text; escape before use)."""
    head = f"{a.task}  attempt {a.attempt}" + ("  (backup)" if a.backup else "")
    lines = [head, f"{a.kind} on {a.host}, slot {a.slot}: {a.outcome}"]
    if a.shard is not None:
        lines.append(f"shard {a.shard.describe()}, {fmt_bytes(a.shard.size)}")
    if a.partition is not None:
        lines.append(f"partition {a.partition}")
    lines.append(
        f"+{fmt_duration(a.start - t0)} → +{fmt_duration(a.end - t0)}, "
        f"took {fmt_duration(a.duration)}"
    )
    lines.append(
        f"{fmt_bytes(a.bytes_in)} in, {fmt_bytes(a.bytes_out)} out, "
        f"{a.records:,} records, {a.keys:,} keys"
    )
    lines += [transfer_text(t, a.kind) for t in a.transfers]
    if a.error:
        lines.append(f"error: {a.error}")
    if a.detail:
        tail = a.detail.splitlines()[-DETAIL_LINES:]
        lines += ["traceback (its last lines):" if len(tail) < len(a.detail.splitlines())
                  else "traceback:", *tail]
    return "\n".join(lines)
