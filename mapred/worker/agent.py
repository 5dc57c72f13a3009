"""The host agent (worker side, standard library only): one run on one host.

``python -m mapred.worker.agent`` is started by the coordinator once per run and host over SSH. It reads
its configuration (work dir, run token, shuffle secret) as the first JSON line on stdin, creates the
run's private scratch directory (0700), starts the per-job rsync daemon (``rsync --daemon
--no-detach``, auth users + a 0600 secrets file, read only, rooted at the scratch ``map``
directory), reports what the host has (cores, versions, cached shards, free disk), then serves
small requests (JSON lines) until it is told to stop, its stdin closes (the coordinator quit, died,
or its connection dropped) or the coordinator stays silent for ``PING_TIMEOUT`` seconds. Then it
kills every process of the run (they carry ``MAPRED_TOKEN`` in their environment: workers, the
daemon, fetches), removes the scratch directory and exits, so nothing of the run is left running or
listening.

**Kept map outputs (``--resume``).** The coordinator names each committed map attempt's directory
(``keep``); the agent hard-links its files under the scratch's ``.kept/`` at once (so nothing a
worker removes later can take them). When the coordinator disappears without saying ``stop`` (it
crashed, or was cut off), ``.kept`` becomes ``WORKDIR/keep/RUN_ID/`` (same layout as the scratch
dir) before the scratch is removed: a ``mapred run --resume`` adopts them (``adopt``: moved into
its own scratch, so its daemon serves them); the next successful run on that output, or
``KEEP_MAX_AGE``, removes them (``forget``, or the sweep at every agent start). Only files stay,
never a process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mapred import paths
from mapred.limits import ALIVE_SECONDS, PING_TIMEOUT
from mapred.modes import DIRECT, SHUFFLE_MODES
from mapred.worker import agentfs, rsyncd, workdir
from mapred.worker.agentfs import KEPT, TOKEN_ENV, check_run_id
from mapred.worker.fetch import REL_RE, fetch_group, file_sum, split_url
from mapred.worker.rsyncd import SHUFFLE_DIR
from mapred.worker.workdir import KEEP_DIR, WORKDIR_SUBDIRS

COMMAND = "-m mapred.worker.agent"  # python COMMAND: what the coordinator starts on each host
_CACHE_NAME = re.compile(r"[0-9a-f]{64}")


class UnsafeWorkdir(Exception):
    """The workdir could be changed by another user, or is not writable: nothing is started."""


class Agent:
    """One run on one host: scratch dir, shuffle daemon, cleanup; see the module docstring."""

    def __init__(self, cfg: dict[str, Any], out: Any) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.token = str(cfg["token"])
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,64}", self.token):
            raise ValueError("bad run token")
        self.workdir = Path(os.path.expanduser(str(cfg["workdir"]))).absolute()
        self.scratch = self.workdir / "runs" / self.token
        self.cache = self.workdir / "cache"
        self.jobs = self.workdir / "jobs"
        self.secret = str(cfg.get("secret") or "")
        self.shuffle = str(cfg.get("shuffle") or "")
        self.daemon: rsyncd.Daemon | None = None
        self.daemon_info: dict[str, Any] | None = None
        self.lock_fd: int | None = None
        self.stopping = False
        self.kept = self.workdir / KEEP_DIR
        self.keep_run: str | None = None  # the coordinator's run id, from its "keep" requests

    # --- start --------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        os.umask(0o077)
        os.environ[TOKEN_ENV] = self.token  # inherited by the daemon: killed with the run
        self._make_workdir()
        agentfs.sweep_runs(self.workdir / "runs")
        kept = agentfs.sweep_kept(self.kept)
        self.lock_fd = agentfs.make_locked(self.scratch, f".{self.token}.{secrets.token_hex(4)}",
                                           ("map", "out", "tmp", SHUFFLE_DIR))
        address = agentfs.server_address()
        if self.secret and self.shuffle in SHUFFLE_MODES:
            bind = address if self.shuffle == DIRECT else "127.0.0.1"
            self.daemon = rsyncd.Daemon(self.scratch, self.cache, self.secret)
            self.daemon_info = self.daemon.start(bind)
        return {"ev": "started", "pid": os.getpid(), "workdir": str(self.workdir),
                "scratch": str(self.scratch), "python": list(sys.version_info[:3]),
                "mapred": agentfs.mapred_version(), "cores": agentfs.cores(),
                "free": agentfs.free(self.workdir), "address": address,
                "addresses": rsyncd.local_addresses(), "daemon": self.daemon_info,
                "rsync": bool(shutil.which("rsync")), "cache": agentfs.cache_listing(self.cache),
                "jobs": sorted(agentfs.job_listing(self.jobs)), "kept": kept}

    def _make_workdir(self) -> None:
        self._check_workdir()
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in WORKDIR_SUBDIRS:
            (self.workdir / d).mkdir(exist_ok=True, mode=0o700)
        self._check_workdir()  # again once created: nothing raced in meanwhile

    def _check_workdir(self) -> None:
        why = workdir.problem(str(self.workdir), WORKDIR_SUBDIRS)
        if why is not None:
            raise UnsafeWorkdir(f"workdir refused: {why}")

    # --- requests -----------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg) + "\n"
        with self.lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, OSError):
                pass

    def handle(self, msg: dict[str, Any]) -> bool:
        """Serve one request; False when the run is over."""
        op = msg.get("op")
        if op == "stop":
            return False
        if op in ("pull", "verify", "sums"):  # slow: on a thread, replies when done
            threading.Thread(target=self._serve, args=(msg, self._slow), daemon=True).start()
        else:
            self._serve(msg, self._quick)  # (ping: just the reply)
        return True

    def _serve(self, msg: dict[str, Any], serve: Callable[[dict[str, Any]], Any]) -> None:
        reply: dict[str, Any] = {"ev": "reply", "id": msg.get("id")}
        try:
            reply.update(serve(msg) or {})
        except Exception as e:  # noqa: BLE001 - reported to the coordinator
            reply["error"] = f"{type(e).__name__}: {e}"
        if msg.get("id") is not None:
            self.send(reply)

    def _quick(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        handler = {"rm": self._rm, "kill": self._kill, "put": self._put, "touch": self._touch,
                   "allow": self._allow, "keep": self._note_keep, "adopt": self._adopt,
                   "forget": self._forget}.get(str(msg.get("op")))
        return handler(msg) if handler is not None else None

    def _slow(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A request that takes time (transfer, hashing), served off the request loop."""
        if msg.get("op") == "pull":
            self._pull(msg)
        elif msg.get("op") == "verify":
            self._verify(msg)
        else:
            return {"sums": {p: list(file_sum(self._inside(p, self.scratch / "map")))
                             for p in msg.get("paths", [])}}
        return None

    def _inside(self, path: str, root: Path) -> Path:
        p = Path(os.path.normpath(path if os.path.isabs(path) else root / path))
        if not p.is_relative_to(root) or p == root:
            raise ValueError(f"path outside {root}: {path!r}")
        return p

    def _rm(self, msg: dict[str, Any]) -> None:
        """Files of discarded attempts; a cache entry proven wrong."""
        for p in msg.get("paths", []):
            root = self.cache if Path(p).parent == self.cache else self.scratch
            paths.remove(self._inside(p, root))

    def _kill(self, msg: dict[str, Any]) -> None:
        for pid in msg.get("pids", []):
            if agentfs.tagged(int(pid), self.token):
                agentfs.kill_group(int(pid))

    def _touch(self, msg: dict[str, Any]) -> None:
        for name in msg.get("names", []):
            if REL_RE.fullmatch(name) and "/" not in name:
                agentfs.touch(self.cache / name)

    def _allow(self, msg: dict[str, Any]) -> None:
        """The run's hosts: their daemons' peers."""
        if self.daemon is not None:
            self.daemon.allow([str(a) for a in msg.get("addresses", [])])

    def _forget(self, msg: dict[str, Any]) -> None:
        for run in msg.get("runs", []):
            if agentfs.RUN_RE.fullmatch(str(run)):
                paths.remove(self.kept / str(run))

    def _put(self, msg: dict[str, Any]) -> None:
        rel = str(msg["path"])
        if not REL_RE.fullmatch(rel) or ".." in rel.split("/"):
            raise ValueError(f"bad path {rel!r}")
        path = self._inside(rel, self.workdir)
        data = base64.b64decode(msg["data"])
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return  # already there, the same bytes (a job module's name is its hash)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _pull(self, msg: dict[str, Any]) -> None:
        """Copy a cached shard from another host's daemon into our cache."""
        name = _cache_name(msg)
        base, rel = split_url(str(msg["url"]))
        if rel != name:
            raise ValueError("url and name disagree")
        if not (self.cache / name).exists():
            fetch_group(base, [rel], self.cache, self.secret, str(msg.get("host", base)))

    def _verify(self, msg: dict[str, Any]) -> None:
        """A cached shard is whole: its size, and its sha256 is its name; if not, it goes."""
        name = _cache_name(msg)
        path = self.cache / name
        size, digest = file_sum(path)
        if size != int(msg["size"]) or digest != name:
            paths.remove(path)
            raise ValueError(f"cached shard {name[:12]} is damaged ({size} bytes, expected "
                             f"{int(msg['size'])}): removed")

    def _note_keep(self, msg: dict[str, Any]) -> None:
        """Hard-link a committed attempt's files under ``.kept`` (same relative layout)."""
        self.keep_run = check_run_id(str(msg["run"]))
        for p in msg.get("paths", []):
            src = self._inside(str(p), self.scratch / "map")
            agentfs.link_tree(src, self.scratch / KEPT / src.relative_to(self.scratch))

    def _adopt(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Move a crashed run's kept map outputs into this run's scratch (served by our daemon).

        Returns ``root`` (where the old run's ``map`` dir now is) and ``files`` (path relative to
        it -> size)."""
        run = check_run_id(str(msg["run"]))
        dst = self.scratch / "map" / "resumed" / run
        files = agentfs.adopt(self.kept / run / "map", dst)
        paths.remove(self.kept / run)
        return {"root": str(dst), "files": files}

    def _keep_committed(self) -> None:
        """Move the committed map outputs' links out of the scratch dir, to WORKDIR/keep/RUN."""
        src = self.scratch / KEPT
        if self.keep_run is None or not src.is_dir():
            return
        try:
            os.rename(src, self.kept / self.keep_run)
        except OSError:
            pass  # then it is simply not resumable

    # --- stop ---------------------------------------------------------------------------------

    def cleanup(self, keep: bool = False) -> None:
        """Kill every process of the run, stop the daemon, remove the scratch dir; with ``keep``
        (the coordinator vanished) committed map outputs are kept for ``--resume`` first."""
        if self.stopping:
            return
        self.stopping = True
        if self.daemon is not None:
            self.daemon.stop()
        agentfs.kill_run(self.token)
        if keep:
            self._keep_committed()
        agentfs.remove_locked(self.scratch)


def _cache_name(msg: dict[str, Any]) -> str:
    name = str(msg["name"])
    if not _CACHE_NAME.fullmatch(name):
        raise ValueError(f"bad cache name {name!r}")
    return name


def _read_requests(agent: Agent, last: list[float], done: threading.Event,
                   stopped: threading.Event) -> None:
    for line in sys.stdin:
        last[0] = time.monotonic()
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not agent.handle(msg):
            stopped.set()
            break
    done.set()


def _heartbeat(agent: Agent, done: threading.Event) -> None:
    while not done.wait(ALIVE_SECONDS):
        agent.send({"ev": "alive"})


def _start(agent: Agent) -> None:
    try:
        agent.send(agent.start())
    except Exception as e:  # noqa: BLE001 - the coordinator shows it with the host's name
        agent.send({"ev": "start_failed", "error": f"{type(e).__name__}: {e}"})
        agent.cleanup()
        os._exit(1)


def agent_main() -> None:
    """``python -m mapred.worker.agent``: serve one run on this host, then clean up."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    agent = Agent(json.loads(sys.stdin.readline() or "{}"), out)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    _start(agent)
    last = [time.monotonic()]
    stopped = threading.Event()  # told to stop: the run is over, nothing is kept
    threading.Thread(target=_read_requests, args=(agent, last, done, stopped),
                     daemon=True).start()
    threading.Thread(target=_heartbeat, args=(agent, done), daemon=True).start()
    while not done.wait(1.0):
        if time.monotonic() - last[0] > PING_TIMEOUT:
            break
    agent.cleanup(keep=not stopped.is_set())
    agent.send({"ev": "bye"})
    os._exit(0)


if __name__ == "__main__":
    agent_main()
