"""The SSH transport's defaults (seconds unless said): the values live in ``mapred.limits``."""

from __future__ import annotations

from mapred.limits import (  # noqa: F401 - the transport's defaults, re-exported
    AGENT_START_TIMEOUT,
    ALLOW_TIMEOUT,
    DEAD_AFTER,
    FLAP_LIMIT,
    FLAP_SILENCE,
    FLAP_WINDOW,
    RSYNC_TIMEOUT,
    STDERR_TAIL,
    STOP_TIMEOUT,
    TRANSFER_THREADS,
    VERIFY_TIMEOUT,
    WATCH_SECONDS,
)

PRESPAWN = True  # start a worker (and its numba import) as soon as the host is connected
