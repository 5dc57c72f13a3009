"""The report's small pieces: counts and counter labels, HTML escaping of run data, its
style sheet and script (inline, allowed by hash in the page's Content-Security-Policy)."""

from __future__ import annotations

import base64
import hashlib
import html

from mapred.history.runs import (
    display_text,
)
from mapred.units import fmt_bytes, fmt_duration, fmt_rate, fmt_time  # noqa: F401 - re-exported


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
