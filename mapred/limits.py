"""Every timeout, limit and retry default of mapred, in one place (both sides: stdlib only).

The constraints between them (a heartbeat well inside the silence that ends its sender, the
agent outliving the coordinator's verdict...) are asserted in ``tests/test_limits.py``. Modules
import what they use by name (``from mapred.limits import DEAD_AFTER``), so a test can still
patch a module's own copy.
"""

from __future__ import annotations

# --- SSH (sshconfig.py, sshconnect.py) -------------------------------------------------------
CONNECT_TIMEOUT = 10.0  # seconds to reach a host (TCP, SSH banner, authentication)
MAX_CONNECT_TIMEOUT = 600  # seconds: a longer connect_timeout in hosts.toml is a typo
SERVER_ALIVE_INTERVAL = 5  # seconds between OpenSSH keepalives
SERVER_ALIVE_COUNT_MAX = 3  # missed keepalives before OpenSSH drops the connection

# --- worker processes (worker.py) and the runner's view of them ---------------------------------
HEARTBEAT_SECONDS = 2.0  # a worker's "alive"
PROGRESS_SECONDS = 0.25  # a worker's progress messages, at most this often
HEARTBEAT_TIMEOUT = 30.0  # a worker silent this long is treated as crashed
TICK_SECONDS = 0.25  # how often time passes for the scheduler when nothing else happens
MAX_RESPAWNS = 8  # fresh workers started in one slot after crashes

# --- the host agent (fetch.py / agent) and the SSH transport's liveness check -------------------
ALIVE_SECONDS = 1.0  # the agent's heartbeat: what the coordinator's liveness check listens to
WATCH_SECONDS = 0.5  # how often the coordinator checks each host (and pings its agent)
# A host whose agent is silent this long is lost: a cut link is noticed within DEAD_AFTER +
# WATCH_SECONDS, inside OpenSSH's own ServerAlive limit used by rsync.
DEAD_AFTER = float(min(10, SERVER_ALIVE_INTERVAL * SERVER_ALIVE_COUNT_MAX))
# The agent's own limit: seconds without a word from the coordinator before it cleans up. The
# coordinator gives a silent host up after DEAD_AFTER: this must be longer.
PING_TIMEOUT = 30.0
AGENT_START_TIMEOUT = 30.0  # seconds for the agent to report (python start, mkdir, daemon)
# A host silent FLAP_SILENCE seconds and back, FLAP_LIMIT times within FLAP_WINDOW, is flapping.
FLAP_SILENCE = 3.0
FLAP_LIMIT = 3
FLAP_WINDOW = 60.0
VERIFY_TIMEOUT = 120.0  # hashing a shard or an attempt's map outputs on the host
ALLOW_TIMEOUT = 10.0  # a member's agent rewriting its daemon's hosts allow
STOP_TIMEOUT = 10.0  # waiting for the agent's cleanup at the end of a run

# --- bytes on the move (rsync) -------------------------------------------------------------------
RSYNC_TIMEOUT = 60  # rsync --timeout for staging and collects: seconds without I/O
FETCH_TIMEOUT = 120  # rsync --timeout of a reducer's fetch from another host's daemon
FETCH_CONNECT_TIMEOUT = 10  # rsync --contimeout of that fetch
FETCH_TRIES = 2
TRANSFER_THREADS = 2  # concurrent shard transfers per host
STDERR_TAIL = 64 * 1024  # bytes of a failed command's stderr kept for its error
SETTLE_TIMEOUT = 120.0  # seconds to wait, before the commit, for collects still running

# --- what a host keeps between runs (the agent cleans up at each run start) ---------------------
CACHE_MAX_AGE = 14 * 86400  # cached shards unused this long are evicted
KEEP_MAX_AGE = 7 * 86400  # kept outputs nobody resumed are removed after this long
STALE_TEMP_AGE = 86400
STALE_RUN_AGE = 3600  # a run dir being made (no lock yet) older than this is abandoned

# --- hosts check / setup ----------------------------------------------------------------------
CHECK_TIMEOUT = 60.0  # seconds for the probe (a cold numba import is slow)
SETUP_TIMEOUT = 900.0  # seconds for venv creation and pip install on a host

# --- tasks ---------------------------------------------------------------------------------------
DEFAULT_SHARD_LIMIT = 64 << 20  # bytes of input per map task
DEFAULT_BUDGET = 512 << 20  # bytes of map-side state per worker before it spills a run
MERGE_FANIN = 256  # run files merged at once by a reducer
