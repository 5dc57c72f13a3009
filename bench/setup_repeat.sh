#!/bin/sh
# Issue 15 "done when": a fresh 3-host `mapred hosts setup`, then `hosts check` and a run, succeeds
# first time, every time. Each round is a new pytest session, so a new test LAN: three fresh sshd
# hosts with only Debian's python3, no venv, no numba cache. Needs root (network namespaces).
# Usage: bench/setup_repeat.sh [ROUNDS]   (default 5; prints one line per round and a tally)
set -u
cd "$(dirname "$0")/.."
rounds=${1:-5}
ok=0
i=1
while [ "$i" -le "$rounds" ]; do
    start=$(date +%s)
    if .venv/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_ssh_run.py \
            -k test_hosts_setup_installs_a_working_venv_on_every_host_at_once >/tmp/setup-round-$i.log 2>&1; then
        ok=$((ok + 1)); result=ok
    else
        result="FAILED (log: /tmp/setup-round-$i.log)"
    fi
    echo "round $i: $result in $(( $(date +%s) - start )) s"
    i=$((i + 1))
done
echo "$ok of $rounds rounds succeeded"
[ "$ok" -eq "$rounds" ]
