"""Shards onto an SSH host: cached, copied from a peer host, or uploaded with rsync."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

from mapred.cluster.hosts import rsync_remote
from mapred.cluster.ssh.connect import (
    HostUnusable,
    RemoteError,
)
from mapred.cluster.ssh.shards import check_unchanged, shard_digest, shard_pieces, stage_shard
from mapred.cluster.ssh.state import TransportState
from mapred.cluster.transport import Staged
from mapred.errors import JobError
from mapred.limits import (
    RSYNC_TIMEOUT,
    VERIFY_TIMEOUT,
)
from mapred.modes import DIRECT
from mapred.shards import Shard

if TYPE_CHECKING:
    from mapred.cluster.ssh.remote import SSHTransport

log = logging.getLogger("mapred")


class StagingMixin(TransportState):
    """Shards onto an SSH host: cached, copied from a peer host, or uploaded with rsync."""

    def prepare(self, shard: Shard) -> Future[Staged]:
        if self._lost is None:
            try:
                return self._pool.submit(self._stage, shard)
            except RuntimeError:  # the pool was shut down: the host was just lost
                pass
        fut: Future[Staged] = Future()
        fut.set_exception(HostUnusable(self._lost or f"host {self.name} is closed"))
        return fut

    def _stage(self, shard: Shard) -> Staged:
        """Put the shard in the host's cache (sent, copied from a peer, or already there) and
        check it there once per run: a damaged copy is removed and sent again, once."""
        self._ready()
        digest = shard_digest(shard)
        remote = f"{self.workdir}/cache/{digest}"
        with self._lock:
            busy = self._busy.setdefault(digest, threading.Lock())
        how, sent, source = "cached", 0, None
        with busy:
            for attempt in range(2):  # the second time from this machine's original
                how, sent, source = "cached", 0, None
                if digest in self._cached:
                    self._count("shards_cached")
                    self.agent_request("touch", names=[digest])
                elif attempt or (source := self._pull_from_peer(digest)) is None:
                    how, sent = "sent", self._upload(shard, digest, remote)
                else:
                    how = "copied"
                self._cached.add(digest)
                if digest in self._verified:
                    break
                try:
                    self.agent_request("verify", wait=True, timeout=VERIFY_TIMEOUT, name=digest,
                                       size=shard.size)
                except RemoteError as e:
                    self._cached.discard(digest)
                    if attempt:
                        raise
                    log.warning("%s: sending it again", e)
                    if source is not None:  # its copy is likely damaged too: it checks it
                        source.agent_request("verify", name=digest, size=shard.size)
                        source._cached.discard(digest)
                    continue
                self._verified.add(digest)
                break
        return Staged(shard_pieces(shard, remote), how, sent, source.name if source else None)

    def _pull_from_peer(self, digest: str) -> SSHTransport | None:
        """Direct mode: copy a shard another host of the run has cached, host to host; the
        host it came from, or None."""
        if self.shuffle != DIRECT:
            return None
        for peer in self.group.holders(digest, exclude=cast("SSHTransport", self)):
            daemon = peer._info.get("daemon")
            if not daemon:
                continue
            addr = f"[{daemon['address']}]" if ":" in daemon["address"] else daemon["address"]
            url = f"rsync://{daemon['user']}@{addr}:{daemon['port']}/cache/{digest}"
            def peer_lost(peer: SSHTransport = peer) -> str | None:
                return "gave up: the source host was lost" if peer._lost else None

            try:  # a frozen peer's daemon accepts and then says nothing: do not wait for rsync
                self.agent_request("pull", wait=True, timeout=RSYNC_TIMEOUT * 4, url=url,
                                   name=digest, host=peer.name, give_up=peer_lost)
            except RemoteError as e:
                if not self._closed:
                    log.info("host %s: copying shard %s from %s failed (%s): sending it",
                             self.name, digest[:12], peer.name, e)
                continue
            self._count("shards_pulled")
            return peer
        return None

    def _upload(self, shard: Shard, digest: str, remote: str) -> int:
        """Send the shard to the host's cache; the bytes rsync sent."""
        check_unchanged(shard)
        path, temporary = stage_shard(shard, self._tmp, digest)
        try:
            sent = self._rsync(["--ignore-existing", "--", path,
                                rsync_remote(self.target, remote)],
                               f"rsync of shard {digest[:12]} ({shard.describe()})")
        finally:
            if temporary:
                os.unlink(path)
        try:
            check_unchanged(shard)
        except JobError:
            self.agent_request("rm", paths=[remote])
            raise
        self._count("shards_sent")
        self._count("bytes_sent", sent)
        return sent

    def _rsync(self, args: list[str], what: str) -> int:
        """Run rsync over the host's OpenSSH connection; the bytes it sent."""
        if self._lost is not None:
            raise HostUnusable(self._lost)
        self._wait_master()
        argv = ["rsync", "-s", f"--timeout={RSYNC_TIMEOUT}", "--stats", "-e", self._rsh(), *args]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        with self._lock:
            self._procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode != 0:
            raise RemoteError(self.name, what, proc.returncode, err.decode("utf-8", "replace"))
        m = re.search(rb"Total bytes sent: ([\d,.]+)", out)
        return int(re.sub(rb"[,.]", b"", m[1])) if m else 0
