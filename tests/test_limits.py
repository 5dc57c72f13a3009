"""The constraints between mapred's timeouts, held by a test rather than by comments."""

from __future__ import annotations

from mapred import limits as L


def test_a_worker_heartbeat_fits_many_times_in_the_silence_that_ends_it() -> None:
    assert L.HEARTBEAT_SECONDS * 5 <= L.HEARTBEAT_TIMEOUT
    assert L.PROGRESS_SECONDS < L.HEARTBEAT_SECONDS


def test_a_silent_host_is_given_up_before_openssh_and_its_agent_do() -> None:
    assert L.ALIVE_SECONDS * 3 <= L.FLAP_SILENCE < L.DEAD_AFTER  # a dropout is not a heartbeat gap
    assert L.WATCH_SECONDS <= L.ALIVE_SECONDS
    # the coordinator's verdict comes first, then OpenSSH's keepalive limit, then the agent's own
    assert L.DEAD_AFTER + L.WATCH_SECONDS <= L.SERVER_ALIVE_INTERVAL * L.SERVER_ALIVE_COUNT_MAX
    assert L.DEAD_AFTER * 2 <= L.PING_TIMEOUT
    assert L.FLAP_LIMIT * (L.FLAP_SILENCE + L.ALIVE_SECONDS) < L.FLAP_WINDOW


def test_transfers_outlast_a_keepalive_verdict() -> None:
    ssh_gives_up = L.SERVER_ALIVE_INTERVAL * L.SERVER_ALIVE_COUNT_MAX
    assert L.RSYNC_TIMEOUT > ssh_gives_up and L.FETCH_TIMEOUT >= L.RSYNC_TIMEOUT
    assert L.FETCH_CONNECT_TIMEOUT <= L.CONNECT_TIMEOUT
    assert L.CONNECT_TIMEOUT <= L.MAX_CONNECT_TIMEOUT
    assert L.SETTLE_TIMEOUT >= L.RSYNC_TIMEOUT


def test_the_host_cache_outlives_kept_outputs_and_stale_runs() -> None:
    assert L.STALE_RUN_AGE < L.STALE_TEMP_AGE < L.KEEP_MAX_AGE < L.CACHE_MAX_AGE
