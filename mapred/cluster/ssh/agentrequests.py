"""What the coordinator asks a host's agent: checksums, kept runs, cached shards."""

from __future__ import annotations

import logging
from typing import Any

from mapred.cluster.ssh.connect import (
    HostUnusable,
)
from mapred.cluster.ssh.state import TransportState
from mapred.errors import JobError, NoHostsError
from mapred.limits import (
    DEAD_AFTER,
    VERIFY_TIMEOUT,
)

log = logging.getLogger("mapred")


class AgentRequestsMixin(TransportState):
    """What the coordinator asks a host's agent: checksums, kept runs, cached shards."""

    def agent_request(self, op: str, *, wait: bool = False,
                      **fields: Any) -> dict[str, Any]:
        """A request to the host's agent; with ``wait``, its reply (raises when the host is
        lost or the reply does not come in time), else nothing (dropped if the host is lost)."""
        if self._agent is None or self._lost is not None:
            if wait:
                raise HostUnusable(self._lost or f"host {self.name}: no agent")
            return {}
        return self._agent.request(op, wait=wait, **fields)

    def probe(self, timeout: float = DEAD_AFTER + 2) -> bool:
        """Whether the host's agent answers a ping within ``timeout``."""
        try:
            self.agent_request("ping", wait=True, timeout=timeout)
        except (JobError, NoHostsError):
            return False
        return True

    def checksums(self, remote_paths: list[str]) -> dict[str, tuple[int, str]]:
        """(size, sha256) of map outputs on the host; reducers check their inputs against them."""
        if not remote_paths:
            return {}
        reply = self.agent_request("sums", wait=True, timeout=VERIFY_TIMEOUT,
                                   paths=list(remote_paths))
        sums = {str(p): (int(v[0]), str(v[1])) for p, v in reply.get("sums", {}).items()}
        with self.group.lock:
            for p, v in sums.items():
                self.group.sums[(self.name, p)] = v
        return sums

    def keep(self, remote_dirs: list[str]) -> None:
        """Committed map attempt dirs: kept for --resume should the coordinator vanish."""
        self.agent_request("keep", run=self.run_id, paths=list(remote_dirs))

    @property
    def kept_runs(self) -> list[str]:
        """Run ids whose map outputs this host kept (their coordinator vanished)."""
        return [str(r) for r in self._info.get("kept", [])]

    def adopt(self, run_id: str) -> tuple[str, dict[str, int]]:
        """Take over the kept map outputs of ``run_id``: (dir now holding that run's ``map``
        dir's contents, {path relative to it: size}); no files if none were kept."""
        reply = self.agent_request("adopt", wait=True, timeout=VERIFY_TIMEOUT, run=run_id)
        return str(reply.get("root", "")), {str(k): int(v) for k, v in
                                            reply.get("files", {}).items()}

    def forget_runs(self, run_ids: list[str]) -> None:
        """Remove the kept map outputs of these runs (nobody will resume them)."""
        if run_ids:
            self.agent_request("forget", runs=list(run_ids))

    def holds(self, digests: set[str]) -> set[str]:
        """Which of these shards the host's cache holds, as far as this run knows (the agent's
        listing at start, plus what was staged since): a hint for placing map tasks."""
        self._ready()
        return {d for d in digests if d in self._cached}  # (other threads add to _cached)
