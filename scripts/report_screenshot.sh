#!/usr/bin/env bash
# Screenshot the HTML report of a run with headless Chromium (1400x900, the top of the page).
#
#   scripts/report_screenshot.sh RUN_DIR_OR_ID OUT.png
#
# RUN_DIR_OR_ID is a run directory (STATE/runs/<id>) or a run id / unique prefix looked up in
# $MAPRED_STATE_DIR, else mapred's default state directory. Python: $MAPRED_PYTHON, else the
# repository's .venv, else python3. Chromium: $CHROMIUM, else chromium / chromium-browser.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 RUN_DIR_OR_ID OUT.png" >&2
    exit 2
fi
ref=$1
out=$(realpath -m -- "$2")
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

python=${MAPRED_PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z $chromium ]]; then
    echo "$0: chromium not found (Debian: apt-get install chromium)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mapred-shot.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# The reference travels as an argument, never spliced into code.
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$ref" "$work/report.html" <<'PY'
import os, sys
from pathlib import Path
from mapred.errors import MapredError
from mapred.history.runs import load_run, load_run_dir, state_dir
from mapred.history.report import render_report

ref, dest = sys.argv[1], Path(sys.argv[2])
explicit = os.environ.get("MAPRED_STATE_DIR")
try:
    if Path(ref).is_dir():
        run = load_run_dir(Path(ref))
    else:
        run = load_run(state_dir(Path(explicit) if explicit else None), ref)
except MapredError as e:
    sys.exit(f"report_screenshot: {e}")
dest.write_text(render_report(run), encoding="utf-8")
PY

mkdir -p -- "$work/profile"
# Flags: the network is closed here and chromium otherwise stalls on background connections.
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --hide-scrollbars --window-size=1400,900 \
    --screenshot="$out" "file://$work/report.html" >"$work/chromium.log" 2>&1 || {
    echo "$0: chromium failed; its log:" >&2
    tail -n 20 "$work/chromium.log" >&2
    exit 1
}
[[ -s $out ]] || { echo "$0: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
