"""How the runner reaches a host: start workers there, place inputs, collect part files.

``Transport`` is the one narrow I/O interface between the runner and a host. ``LocalTransport``
is this machine (the embedded default): workers are child processes, inputs are read in place and
reducers write straight into the output's staging directory. An SSH transport (fabric for
commands, rsync for bytes) implements the same methods for LAN hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mapred import paths
from mapred.jobfiles import JobFiles
from mapred.shards import Shard
from mapred.worker.fetch import file_sum

OnMessage = Callable[[str, dict[str, Any] | None], None]  # (slot, message or None at exit)


class WorkerHandle(Protocol):
    slot: str

    def send(self, msg: dict[str, Any]) -> None: ...
    def kill(self) -> None: ...
    def stderr_tail(self, lines: int = 20) -> str: ...


@dataclass(frozen=True)
class Staged:
    """A map input in place on its host: the map request's ``pieces`` (path on the host, rel,
    start, end, gzip, and for a file read in place its planned size and mtime_ns) and, for the
    journal, how they got there: ``how`` is ``in place`` (read where it lies), ``cached``
    (already on the host), ``sent`` (``bytes`` sent from here) or ``copied`` (from ``peer``)."""

    pieces: list[dict[str, Any]]
    how: str = "in place"
    bytes: int = 0
    peer: str | None = None

    def journal(self) -> dict[str, Any]:
        """The journal's ``staging`` fields (see ``history.Transfer``)."""
        return {"how": self.how, "bytes": self.bytes, **({"peer": self.peer} if self.peer else {})}


class Transport(Protocol):
    """One host of the run (read-only attributes: a transport may compute them)."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str:
        """Where the host is reached, for the journal: "local", or the SSH host[:port]."""
        ...
    @property
    def cores(self) -> int: ...
    @property
    def memory(self) -> int | None:
        """Map-side memory budget for the whole host (hosts.toml), or None."""
        ...
    @property
    def workers_enter_scratch(self) -> bool:
        """Whether workers run in the scratch dir (SSH) or where mapred was started (local:
        paths the user gave may be relative to it)."""
        ...

    def start(self, run_id: str) -> None: ...
    def job_path(self, job: JobFiles) -> str:
        """Where the job module is on the host (its modules beside it), shipped if need be."""
        ...
    def prepare(self, shard: Shard) -> Future[Staged]:
        """Make the shard's bytes available on the host (maybe in the background); the future's
        result holds the ``pieces`` of the map request and how they were staged."""
        ...
    def reduce_inputs(self, inputs: list[tuple[str, str]]) -> list[Any]:
        """The ``inputs`` field of a reduce request for map outputs ``(host, path)``."""
        ...
    def spawn_worker(self, index: int, on_message: OnMessage) -> WorkerHandle: ...
    def reduce_output(self, staging: Path, partition: int, attempt: str) -> str: ...
    def collect(self, remote: str, target: Path) -> None: ...
    def remove(self, remote_paths: list[str]) -> None: ...
    @property
    def scratch(self) -> str: ...
    def close(self) -> None: ...

    # a host that can be lost mid-run (SSH); LocalTransport: never lost, keeps nothing
    def watch(self, on_lost: Callable[[str, str], None],
              on_flap: Callable[[str, str], None] | None = None) -> None:
        """Call ``on_lost(host, reason)`` once, from any thread, when the host is lost; before
        any of its workers' exits is delivered. ``on_flap(host, reason)``: each time the host
        comes back from a silence that makes it flapping (its link keeps going down and up)."""
        ...
    def lose(self, reason: str) -> None:
        """Give the host up for the rest of the run (stop everything there, never use it)."""
        ...
    def probe(self, timeout: float = ...) -> bool:
        """Whether the host answers within ``timeout`` (False once it is lost)."""
        ...
    def checksums(self, remote_paths: list[str]) -> dict[str, tuple[int, str]]:
        """(size, sha256) of map outputs on the host, remembered to check reducers' inputs."""
        ...
    def keep(self, remote_dirs: list[str]) -> None:
        """Committed map attempt dirs, kept for ``--resume`` if the coordinator vanishes."""
        ...
    def adopt(self, run_id: str) -> tuple[str, dict[str, int]]:
        """Take over what the host kept for ``run_id``: (dir, {relative path: size}); the dir
        is empty when the host keeps nothing (its files are checked in place)."""
        ...
    def forget_runs(self, run_ids: list[str]) -> None:
        """Remove what the host kept for these runs."""
        ...
    @property
    def kept_runs(self) -> list[str]:
        """Run ids the host keeps map outputs for."""
        ...
    def holds(self, digests: set[str]) -> set[str]:
        """Which of these shard digests the host's shard cache holds (as listed when the run
        started, plus what was staged since)."""
        ...


class Delivery:
    """A worker's messages for the runner: held until a receiver is attached (a worker may start
    before the runner wants it), then passed on in order. ``None`` says the worker ended."""

    def __init__(self, slot: str, on_message: OnMessage | None = None) -> None:
        self.slot = slot
        self._on_message = on_message
        self._pending: list[dict[str, Any] | None] = []
        self._lock = threading.Lock()

    def attach(self, on_message: OnMessage) -> None:
        with self._lock:
            self._on_message = on_message
            for msg in self._pending:
                on_message(self.slot, msg)
            self._pending = []

    def __call__(self, msg: dict[str, Any] | None) -> None:
        with self._lock:
            if self._on_message is None:
                self._pending.append(msg)
            else:
                self._on_message(self.slot, msg)


class LocalWorker:
    """A ``python -m mapred.worker.main`` child process in its own session (process group)."""

    def __init__(self, slot: str, log: Path, on_message: OnMessage | None,
                 env: dict[str, str]) -> None:
        self.slot = slot
        self.log = log
        self._deliver = Delivery(slot, on_message)
        self.attach = self._deliver.attach
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in _pump
        # A private TMPDIR, removed when the worker ends: a worker killed (SIGKILL, on Ctrl-C or
        # loss) mid warm-up or mid task cannot leave its temporary files in the user's /tmp.
        self._tmp = tempfile.mkdtemp(prefix="mapred-worker-", dir=env.get("TMPDIR"))
        env = {**env, "TMPDIR": self._tmp}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mapred.worker.main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            start_new_session=True,
            env=env,
        )
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self._deliver(msg)
        self.proc.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._log_file.close()
        self._deliver(None)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the exit is reported by _pump

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_bytes()[-16384:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalTransport:
    """This machine, no SSH: the embedded default."""

    workers_enter_scratch = False
    address = "local"  # as in hosts.toml: this machine, no SSH

    def __init__(self, name: str, cores: int, log_dir: Path, env: dict[str, str],
                 memory: int | None = None, scratch_root: Path | None = None) -> None:
        self.name = name
        self.cores = cores
        self.memory = memory
        self.scratch_root = scratch_root
        self.log_dir = log_dir
        self.env = env
        self._scratch: Path | None = None
        self.workers: list[LocalWorker] = []
        self._prespawned: LocalWorker | None = None

    def prespawn(self) -> None:
        """Start worker 0 now: its numba import overlaps the coordinator's planning."""
        self._prespawned = self._launch(0, None)
        self._prespawned.send({"op": "preload"})

    def start(self, run_id: str) -> None:
        """Make the run's private scratch directory (0700). It lives under the state directory
        so that committed map outputs survive a coordinator crash for ``--resume``."""
        if self.scratch_root is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"mapred-{run_id}-"))
            return
        self.scratch_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scratch = self.scratch_root / run_id
        self._scratch.mkdir(mode=0o700)

    @property
    def scratch(self) -> str:
        assert self._scratch is not None
        return str(self._scratch)

    def job_path(self, job: JobFiles) -> str:
        return str(job.path)  # read in place, its modules beside it

    def prepare(self, shard: Shard) -> Future[Staged]:
        """Local input is read in place: the future is already resolved."""
        fut: Future[Staged] = Future()
        fut.set_result(Staged([{"path": str(p.file.path), "rel": p.file.rel, "start": p.start,
                                "end": p.end, "gzip": p.file.gzip, "size": p.file.size,
                                "mtime_ns": p.file.mtime_ns} for p in shard.pieces]))
        return fut

    def reduce_inputs(self, inputs: list[tuple[str, str]]) -> list[Any]:
        return [path for _, path in inputs]

    def spawn_worker(self, index: int, on_message: OnMessage) -> LocalWorker:
        worker = self._prespawned if index == 0 else None
        self._prespawned = None if index == 0 else self._prespawned
        if worker is None or worker.proc.poll() is not None:
            worker = self._launch(index, on_message)
        else:
            worker.attach(on_message)
        return worker

    def _launch(self, index: int, on_message: OnMessage | None) -> LocalWorker:
        log = self.log_dir / f"worker-{self.name}-{index}.log"
        worker = LocalWorker(f"{self.name}/{index}", log, on_message, self.env)
        self.workers.append(worker)
        return worker

    def reduce_output(self, staging: Path, partition: int, attempt: str) -> str:
        return str(staging / paths.reduce_tmp_name(partition, attempt))

    def collect(self, remote: str, target: Path) -> None:
        os.replace(remote, target)

    def remove(self, remote_paths: list[str]) -> None:
        for p in remote_paths:
            paths.remove(Path(p))

    def watch(self, on_lost: Callable[[str, str], None],
              on_flap: Callable[[str, str], None] | None = None) -> None:
        pass  # this machine is never lost

    def lose(self, reason: str) -> None:
        pass

    def probe(self, timeout: float = 0.0) -> bool:
        return True

    def checksums(self, remote_paths: list[str]) -> dict[str, tuple[int, str]]:
        """(size, sha256) of the files that exist."""
        out = {}
        for p in remote_paths:
            try:
                out[p] = file_sum(Path(p))
            except FileNotFoundError:
                continue
        return out

    def keep(self, remote_dirs: list[str]) -> None:
        pass  # the scratch dir (under the state dir) outlives a crash as it is

    @property
    def kept_runs(self) -> list[str]:
        return []

    def adopt(self, run_id: str) -> tuple[str, dict[str, int]]:
        return "", {}  # an earlier run's outputs are checked where they lie (resume.load)

    def forget_runs(self, run_ids: list[str]) -> None:
        """Remove the scratch dirs these runs left under the scratch root."""
        if self.scratch_root is not None:
            for run_id in run_ids:
                shutil.rmtree(self.scratch_root / run_id, ignore_errors=True)

    def holds(self, digests: set[str]) -> set[str]:
        return set()  # input is read in place: no shard cache

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
