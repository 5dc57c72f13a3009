"""Every default of the SSH transport, in one place (seconds unless said)."""

from __future__ import annotations

from mapred.cluster.ssh.config import SERVER_ALIVE_COUNT_MAX, SERVER_ALIVE_INTERVAL

PRESPAWN = True  # start a worker (and its numba import) as soon as the host is connected
AGENT_START_TIMEOUT = 30.0  # seconds for the agent to report (python start, mkdir, daemon)
# A host whose agent (heartbeat every second) is silent this long is lost: a cut link is noticed
# within DEAD_AFTER + WATCH_SECONDS, inside OpenSSH's own ServerAlive limit (15 s) used by rsync.
DEAD_AFTER = float(min(10, SERVER_ALIVE_INTERVAL * SERVER_ALIVE_COUNT_MAX))
WATCH_SECONDS = 0.5  # how often the liveness of each host is checked (and its agent pinged)
# A host whose agent went silent for FLAP_SILENCE seconds and came back, FLAP_LIMIT times within
# FLAP_WINDOW seconds, is flapping (a link going down and up): the runner excludes it.
FLAP_SILENCE = 3.0
FLAP_LIMIT = 3
FLAP_WINDOW = 60.0
VERIFY_TIMEOUT = 120.0  # hashing a shard or an attempt's map outputs on the host
ALLOW_TIMEOUT = 10.0  # a member's agent rewriting its daemon's hosts allow
STOP_TIMEOUT = 10.0  # waiting for the agent's cleanup at the end of a run
RSYNC_TIMEOUT = 60  # rsync --timeout: seconds without I/O
TRANSFER_THREADS = 2  # concurrent shard transfers per host
STDERR_TAIL = 64 * 1024
