"""One self-contained HTML report of a run: header, task timeline, per-host throughput, stragglers.

`render_report(run)` returns the whole page as a string: CSS, JS and SVG inline, no fonts, images
or requests at view time. A Content-Security-Policy allows only this module's own style and
script (by hash), so even a string that escaped escaping could not run. Every string that comes
from the run (file names, host names, errors) goes through `_e`: made valid UTF-8 and free of
control / bidi-override characters by `history.display_text`, then HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import time
from collections.abc import Iterable

from mapred.history import (
    COUNTERS,
    Attempt,
    HostStats,
    Marker,
    Run,
    Shard,
    Startup,
    Transfer,
    display_text,
)
from mapred.units import fmt_bytes, fmt_duration, fmt_rate, fmt_time  # noqa: F401 - re-exported
from mapred.words import plural

# --------------------------------------------------------------------------- formatting


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:,.2f}"


def fmt_counter(name: str, value: float) -> str:
    """A counter's value; the job's own (``user.NAME``) are plain numbers, whatever the name."""
    if name.startswith("user."):
        return fmt_count(value)
    return fmt_bytes(value) if "bytes" in name else fmt_count(value)


def counter_label(name: str) -> str:
    return name if name.startswith("user.") else name.replace("_", " ")


def _e(s: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(display_text(str(s)), quote=True)


def _clip(s: str, width: int) -> str:
    s = display_text(s)
    return s if len(s) <= width else s[: width - 1] + "…"


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- page

STYLE = """
:root{--map:#3b7dd8;--reduce:#f08c2e;--fail:#d32f2f;--ink:#1d232b;--mute:#66707c;
--line:#dde2e8;--bg:#f6f8fa;--card:#fff;--xfer:#1f9e89;--start:#b9c2cd}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1400px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:21px;margin:0;font-weight:650;word-break:break-all}
h2{font-size:15px;margin:0 0 10px;font-weight:650;text-transform:uppercase;letter-spacing:.04em;
color:#3a4350}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin-top:14px}
header{display:flex;gap:14px;align-items:center;flex-wrap:wrap}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:650;font-size:13px;
color:#fff;background:#7a8490}
.badge.succeeded{background:#2e7d32}.badge.failed,.badge.crashed{background:var(--fail)}
.badge.interrupted{background:#e09100}.badge.running{background:#1565c0}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin-top:10px;
color:var(--mute)}
.meta b{color:var(--ink);font-weight:500;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin-top:14px}
.card{flex:1 1 0;min-width:max-content;background:var(--card);border:1px solid var(--line);
border-radius:8px;padding:8px 12px}
.card .v{font-size:18px;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .k{color:var(--mute);font-size:12px}
.card.warn .v{color:#b45309}
.error{border-color:#f3b4b4;background:#fff5f5}
.error pre{white-space:pre-wrap;margin:0;font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace}
.error pre.detail{margin-top:8px;padding-top:8px;border-top:1px solid #f3b4b4;color:#5b1010}
.notes{border-color:#f1d9a6;background:#fffbf0}.notes ul{margin:0;padding-left:20px}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;color:var(--mute);font-size:12.5px;
margin-bottom:6px}
.legend span{display:inline-flex;align-items:center;gap:5px}
#detail{min-height:3.2em;margin-top:6px;padding:6px 10px;background:var(--bg);border-radius:6px;
white-space:pre-wrap;font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono",monospace;color:#333}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
svg{display:block}
.lane-bg{fill:#fff}.lane-bg.alt{fill:#f3f5f8}
.lane-name{font-size:13px;font-weight:600;fill:var(--ink)}
.lane-sub{font-size:11px;fill:var(--mute)}.lane-sub.lost{fill:var(--fail);font-weight:600}
.grid{stroke:#e3e7ec;stroke-width:1}.tick{font-size:11px;fill:var(--mute)}
.phase{stroke:#8792a2;stroke-dasharray:4 3}.phase-label{font-size:11px;fill:#4d5663}
.lostline{stroke:var(--fail);stroke-width:2}.lostmark{fill:var(--fail);font-size:12px;
font-weight:700}
.att{cursor:pointer}.att .bar{fill:var(--map)}.att.reduce .bar{fill:var(--reduce)}
.att.failed .bar,.att.killed .bar,.att.lost .bar{fill-opacity:.55}
.att.running .bar,.att.unfinished .bar{fill-opacity:.35;stroke:#555;stroke-dasharray:2 2}
.att.backup .bar{stroke:#111;stroke-width:1.3;stroke-dasharray:3 2}
.ov-failed{fill:url(#p-failed);stroke:var(--fail);stroke-width:1.3}
.ov-killed{fill:url(#p-killed);stroke:#6b7280}.ov-lost{fill:url(#p-lost);stroke:#111}
.mk-backup{fill:#111}
.seg.stage,.seg.fetch{fill:var(--xfer)}.seg.collect{fill:#7d8896}
.att.failed .seg,.att.killed .seg,.att.lost .seg{fill-opacity:.55}
.wait.start rect{fill:url(#p-start);stroke:var(--start)}
.wait.idle line{stroke:#98a2ae;stroke-width:1.2;stroke-dasharray:1.5 3}
.wait.idle rect{fill:transparent}
.att:hover .bar{stroke:#111;stroke-width:1.5}
svg.hl-on .att{opacity:.18}svg.hl-on .att.hl{opacity:1}
svg.hl-on .att.hl .bar{stroke:#111;stroke-width:2}
.tp-bar{fill:var(--map)}.tp-bar.lost{fill:#c9ced6}.tp-label{font-size:13px;fill:var(--ink)}
.tp-value{font-size:13px;fill:#3a4350}
.cols{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,7fr);gap:14px}
.cols section{margin-top:0}
.wrap{margin-top:14px}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th{text-align:left;color:var(--mute);font-weight:600;font-size:12px;border-bottom:1px solid
var(--line);padding:4px 8px;white-space:nowrap}
td{padding:4px 8px;border-bottom:1px solid #eef1f4;vertical-align:top}
td.n,th.n{text-align:right;white-space:nowrap}
td.file{max-width:380px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
tr[data-task]{cursor:pointer}tr[data-task]:hover td{background:#f1f5fb}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:11.5px;background:#eef1f4;
color:#3a4350;margin-right:3px}
.tag.bad{background:#fde8e8;color:#a61b1b}.tag.lost{background:#fde8e8;color:#a61b1b}
.muted{color:var(--mute)}
footer{margin-top:16px;color:var(--mute);font-size:12px}
footer code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;word-break:break-all}
@media (max-width:900px){.cols{grid-template-columns:1fr}}
"""

SCRIPT = """
(function () {
  "use strict";
  var gantt = document.getElementById("gantt");
  var detail = document.getElementById("detail");
  if (!gantt || !detail) { return; }
  var idle = detail.textContent;
  function attemptOf(el, cls) {
    while (el && el !== gantt) {
      if (el.classList && el.classList.contains(cls || "att")) { return el; }
      el = el.parentNode;
    }
    return null;
  }
  function highlight(task) {
    var all = gantt.querySelectorAll(".att");
    for (var i = 0; i < all.length; i++) {
      all[i].classList.toggle("hl", task !== null && all[i].getAttribute("data-task") === task);
    }
    gantt.classList.toggle("hl-on", task !== null);
  }
  var current = null;
  function toggle(task) {
    current = (task === current) ? null : task;
    highlight(current);
  }
  gantt.addEventListener("mouseover", function (ev) {
    var a = attemptOf(ev.target) || attemptOf(ev.target, "wait");
    var t = a ? a.querySelector(":scope > title") : null;
    detail.textContent = t ? t.textContent : idle;
  });
  gantt.addEventListener("click", function (ev) {
    var a = attemptOf(ev.target);
    toggle(a ? a.getAttribute("data-task") : null);
  });
  var rows = document.querySelectorAll("tr[data-task]");
  for (var i = 0; i < rows.length; i++) {
    rows[i].addEventListener("click", function () {
      toggle(this.getAttribute("data-task"));
      gantt.scrollIntoView({block: "nearest"});
    });
  }
})();
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


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


# --------------------------------------------------------------------------- timeline

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


# --------------------------------------------------------------------------- hosts


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


# --------------------------------------------------------------------------- stragglers

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
