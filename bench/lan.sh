#!/bin/sh
# Thin wrapper around tests/lanlib.py: a test LAN of real sshd hosts in network namespaces.
#   bench/lan.sh up 3 --dir /tmp/lan    then: ssh -F /tmp/lan/ssh_config h1
#   bench/lan.sh status | down --dir /tmp/lan | down --all | cleanup
# Needs root. Uses .venv/bin/python when present, else python3.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"
[ -x "$py" ] || py=python3
exec "$py" "$here/tests/lanlib.py" "$@"
