"""``python -m mapred.worker.main``: the process that runs tasks on a host, one task at a time.

The coordinator starts one worker per core it uses on a host and talks to it with JSON lines
(the messages of ``wire.py``): requests on the original stdin, events on the original stdout.
User code cannot touch either: file descriptor 1 is made a copy of stderr (the worker's log:
print() lands there, line by line), 0 reads /dev/null. Requests: ``Init``, ``MapRequest``,
``ReduceRequest`` (an input may be an rsync URL of another host: fetched first, see fetch.py),
``Preload`` (import numba and load the engine kernels now), ``Quit``.

``python -m mapred.worker.main --warm`` only compiles (or loads) the engine kernels into this host's
cache and exits: ``mapred hosts setup`` runs it so that the first run does not compile.

Events: ``Ready`` (with the job's warnings for the user) or ``InitFailed`` (the job does not
load, or broke its contract on the warm-up sample), ``Progress``, ``Fetched`` (a reduce's inputs
from other hosts are in place), ``Done`` (with the worker's peak RSS so far), ``Failed``,
``Alive`` (heartbeat).

Watchdog: when stdin reaches end of file — the coordinator quit, died or its connection dropped —
the worker removes what its task in flight wrote and exits at once, even in the middle of a task.
This module imports only the standard library (numpy/numba/mmh3 are imported by the tasks).
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from mapred import paths, wire
from mapred.limits import HEARTBEAT_SECONDS, PROGRESS_SECONDS

TaskResult = tuple[dict[str, list[str]], dict[str, int]]  # a task's outputs and counters


class Channel:
    """Thread-safe writer of protocol events."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, msg: wire.Message) -> None:
        line = wire.encode(msg).decode()
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, OSError):
                os._exit(1)


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.job: Any = None
        self.scratch: Path | None = None
        self.reducers = 1
        self.seed = 0
        self.budget = 0
        self.current: wire.MapRequest | wire.ReduceRequest | None = None  # the task in flight

    # --- requests ---------------------------------------------------------------------------

    def handle(self, msg: wire.Message | None) -> bool:
        """Serve one request (None: of a kind this worker does not know); False: stop."""
        if isinstance(msg, wire.Init):
            self._init(msg)
        elif isinstance(msg, wire.MapRequest):
            self._task(msg.attempt, lambda: self._map(msg))
        elif isinstance(msg, wire.ReduceRequest):
            self._task(msg.attempt, lambda: self._reduce(msg))
        elif isinstance(msg, wire.Preload):  # SSH transports: warm up while the coordinator plans
            try:
                _warm_up(None)
            except Exception:  # noqa: BLE001,S110 - best effort; init reports real problems
                pass
        return not isinstance(msg, wire.Quit)

    def _init(self, msg: wire.Init) -> None:
        from mapred import job as jobmod
        from mapred.errors import MapredError

        self.scratch = Path(msg.scratch)
        if msg.enter_scratch:  # an SSH host: relative writes of user code land in scratch
            os.chdir(self.scratch)
        self.reducers, self.seed = int(msg.reducers), int(msg.seed)
        self.budget = int(msg.memory or _default_budget(int(msg.slots)))
        try:
            _check_job_hash(Path(msg.job), msg.job_sha256)
            for rel, digest in msg.job_helpers.items():  # modules it imports
                _check_job_hash(Path(msg.job).parent / rel, digest)
            self.job = jobmod.load(Path(msg.job), dict(msg.params))
            _warm_up_job(self.scratch, self.job, msg.sample)
        except MapredError as e:
            self.channel.send(wire.InitFailed(e.message, e.detail))
            return
        gc.freeze()  # what the imports made lives as long as the worker: never scan it again
        gc.enable()
        self.channel.send(wire.Ready(os.getpid(), self.job.tier, list(self.job.warnings)))

    def _task(self, attempt: str, fn: Callable[[], TaskResult]) -> None:
        from mapred.worker.mapper import UserCodeError

        started = time.monotonic()
        try:
            outputs, counters = fn()
        except UserCodeError as e:
            self._report(wire.Failed(attempt, str(e), e.detail))
            return
        except Exception as e:  # noqa: BLE001 - reported to the coordinator, which decides
            self._report(wire.Failed(attempt, f"{type(e).__name__}: {e}"))
            return
        self._report(wire.Done(attempt, time.monotonic() - started, outputs, counters, _maxrss()))

    def _report(self, msg: wire.Message) -> None:
        """The task is over: from now on its files belong to the coordinator (the watchdog
        must not remove a committed output), so forget it before telling anyone."""
        self.current = None
        self.channel.send(msg)

    def _map(self, msg: wire.MapRequest) -> TaskResult:
        from mapred.worker.mapper import MapSpec, run_map

        assert self.scratch is not None
        spec = MapSpec(msg.task, msg.attempt, tuple(msg.pieces))
        out_dir = paths.map_attempt_dir(self.scratch, spec.attempt)
        progress = _Progress(self.channel, spec.attempt)
        result = run_map(self.job, spec, out_dir, self.reducers, self.seed, progress, self.budget)
        progress.flush()  # the bytes since the last message: the bar must reach the end
        return {str(p): runs for p, runs in result.outputs.items()}, result.counters

    def _reduce(self, msg: wire.ReduceRequest) -> TaskResult:
        from mapred.worker.reducer import run_reduce

        assert self.scratch is not None
        tmp = paths.reduce_work_dir(self.scratch, msg.attempt)
        try:
            inputs = list(msg.inputs)
            if not all(isinstance(i, str) for i in inputs):  # remote map outputs: fetch them
                from mapred.worker.fetch import localize

                fetched = localize(inputs, tmp / "in", self.scratch)
                sent = [p for i, p in zip(inputs, fetched, strict=True)
                        if isinstance(i, dict) and "url" in i]
                if sent:  # the journal shows the fetch on the timeline
                    self.channel.send(wire.Fetched(msg.attempt,
                                                   sum(os.path.getsize(p) for p in sent)))
                inputs = fetched
            counters = run_reduce(self.job, inputs, Path(msg.out), tmp)
        finally:
            paths.remove(tmp)
        os.chmod(msg.out, _OUTPUT_MODE)
        return {str(msg.partition): [msg.out]}, counters


def _maxrss() -> int | None:
    """This worker's peak resident set size so far, in bytes (reported with each task)."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    except (ImportError, OSError):
        return None


def _check_job_hash(path: Path, expected: str | None) -> None:
    """The job module here must be the one the run started with (not changed on this host,
    nor edited on the laptop since the run read it)."""
    import hashlib

    from mapred.errors import JobLoadError

    if expected is None:
        return
    try:
        found = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise JobLoadError(f"cannot read the job module {path}: {e.strerror or e}") from None
    if found != expected:
        raise JobLoadError(f"job module {path} is not the one this run started with (sha256 "
                           f"{found[:12]}..., expected {expected[:12]}...): it was changed "
                           "after mapred read it")


class _Progress:
    """Throttled progress reporting: input bytes mapped since the last event."""

    def __init__(self, channel: Channel, attempt: str) -> None:
        self.channel = channel
        self.attempt = attempt
        self.pending = 0
        self.last = time.monotonic()

    def __call__(self, nbytes: int) -> None:
        self.pending += nbytes
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.pending:
            self.channel.send(wire.Progress(self.attempt, self.pending))
            self.pending = 0


def _warm_up_job(scratch: Path, job: Any, sample: dict[str, Any] | None) -> None:
    """The warm-up before a job's first task. A break of the job contract it finds is the
    user's (JobLoadError); anything else (a full disk...) is left to the job's own tasks."""
    from mapred.errors import JobLoadError

    try:
        _warm_up(scratch, job, sample)
    except JobLoadError:
        raise
    except Exception:  # noqa: BLE001,S110 - best effort
        pass


def _warm_up(scratch: Path | None, job: Any = None, sample: dict[str, Any] | None = None) -> None:
    """Compile or load the kernels a task needs now, rather than in the middle of the first task:
    workers that start idle are then ready the moment their first task (often a reduce) comes.
    And check the job on a sample of its input (warmup.py).

    A small map and reduce of ``job`` (the bundled word count when None) over a sample file, so
    every kernel is loaded with the very types a real task uses: the engine's, the job's scan and
    what it calls, a growing key table. Without a scratch dir yet (a worker started before the
    run's), in a private temporary one.

    One worker per host compiles: the first run on a host (or after an upgrade) compiles the
    kernels once (~16 s of CPU here), not once per worker at once; the others wait on an
    flock in the cache directory (released if its holder dies), then load them from the cache.
    A plain-tier job compiles nothing and takes no lock.
    """
    import tempfile

    from mapred import job as jobmod
    from mapred import warmup

    if job is None:
        job = jobmod.load(jobmod.resolve("wordcount"), {})
    with _compile_lock() if job.tier == "numba" else contextlib.nullcontext():
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".warm-", dir=scratch) as tmp:
            warmup.sample_run(Path(tmp), job, sample)


@contextlib.contextmanager
def _compile_lock() -> Iterator[None]:
    import fcntl
    import tempfile

    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir())
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / ".compile.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _default_budget(slots: int) -> int:
    """Map-side memory per worker: an eighth of this host's memory shared by its workers,
    between 64 MiB and 1 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 4 << 30
    return max(64 << 20, min(1 << 30, total // 8 // max(1, slots)))


def _read_requests(requests: queue.Queue[wire.Message | None], worker: Worker,
                   stream: BinaryIO) -> None:
    """Feed requests to the main thread; on end of input, clean up and exit at once.

    The coordinator is gone: what the task in flight wrote is removed; committed map outputs of
    earlier tasks stay for ``mapred run --resume`` (the next run on that output removes them).
    """
    for line in stream:
        if line.strip():
            msg = wire.decode(line)
            if isinstance(msg, (wire.MapRequest, wire.ReduceRequest)):
                worker.current = msg
            requests.put(msg)
    _remove_in_flight(worker)
    os._exit(0)  # no flush: on a host whose coordinator vanished, stderr may never drain


def _remove_in_flight(worker: Worker) -> None:
    msg = worker.current
    if msg is None or worker.scratch is None:
        return
    if isinstance(msg, wire.MapRequest):
        paths.remove(paths.map_attempt_dir(worker.scratch, msg.attempt))
    else:
        paths.remove(paths.reduce_work_dir(worker.scratch, msg.attempt))
        paths.remove(Path(msg.out))


def _heartbeat(channel: Channel) -> None:
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        channel.send(wire.Alive())


def _setup_environment() -> None:
    from mapred import __version__, paths

    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(paths.numba_cache_dir(__version__))
    # one worker per core already: numpy's BLAS threads would only spin (and cost ~0.1 s to start)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _keep_freed_memory()
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next task instead of returning it to the kernel: each
    task allocates its key table and sort arrays afresh, and zeroing fresh pages was a tenth of a
    word count's CPU time. Allocations above 32 MiB are still mapped (and unmapped) directly.
    MALLOC_* variables set by the user win."""
    if any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 64 << 20)
    except (OSError, AttributeError):  # not glibc: the defaults are fine
        pass


_OUTPUT_MODE = 0o644  # part files follow the coordinator's umask; set from MAPRED_UMASK


def main() -> None:
    global _OUTPUT_MODE
    umask = int(os.environ.get("MAPRED_UMASK", "0o022"), 8)
    _OUTPUT_MODE = 0o666 & ~umask
    os.umask(0o077)  # scratch files are private
    gc.disable()  # until ready: numba's imports make many objects and no garbage worth a pass
    _setup_environment()
    if sys.argv[1:] == ["--warm"]:  # `mapred hosts setup`: compile the kernels into the cache
        _warm_up(None)
        return
    proto_in, proto = _protocol_streams()
    channel = Channel(proto)
    worker = Worker(channel)
    requests: queue.Queue[wire.Message | None] = queue.Queue()
    threading.Thread(target=_read_requests, args=(requests, worker, proto_in),
                     daemon=True).start()
    threading.Thread(target=_heartbeat, args=(channel,), daemon=True).start()
    while worker.handle(requests.get()):
        pass
    proto.flush()
    _exit()


def _protocol_streams() -> tuple[BinaryIO, TextIO]:
    """The protocol's own copies of stdin and stdout. User code gets /dev/null as fd 0 (input()
    cannot eat a request) and stderr as fd 1: print() and numba's print land in the worker's
    log, flushed line by line, never in the protocol."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    return proto_in, proto


def _exit() -> None:
    """Exit now (no interpreter teardown), with what user code printed written out (line
    buffering leaves at most a line without its newline)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
