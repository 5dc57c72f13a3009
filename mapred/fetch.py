"""Worker-side helpers of remote runs (standard library only): shuffle fetches and the host agent.

**Shuffle fetch.** A reduce request's ``inputs`` may hold, next to plain local paths, dicts
``{"url": "rsync://mapred@ADDR:PORT/map/ATTEMPT/pNNNNN-SSSS.run", "host": NAME}``: map outputs on
another host, served by that host's per-job rsync daemon. :func:`localize` fetches them (one rsync
per source host, the file list NUL-separated on stdin, the password in ``RSYNC_PASSWORD`` read from
the run's private ``.shuffle/password`` file, never on a command line) and returns local paths in
the order of ``inputs`` (the merge order of equal keys must not depend on where a run was made).
An input may carry the ``size`` and ``sha256`` its map attempt had when it committed (a local one is
then ``{"path": PATH, "size": N, "sha256": HEX}``): every such file is checked before the reduce
reads it, so a truncated or damaged partial is never merged.

**Host agent.** ``python -m mapred.fetch agent`` is started by the coordinator once per run and
host over SSH. It reads its configuration (work dir, run token, shuffle secret) as the first JSON
line on stdin, creates the run's private scratch directory (0700), starts the per-job rsync daemon
(``rsync --daemon --no-detach``, auth users + a 0600 secrets file, read only, rooted at the
scratch ``map`` directory), reports what the host has (cores, versions, cached shards, free disk),
then serves small requests (JSON lines) until it is told to stop, its stdin closes (the
coordinator quit, died, or its connection dropped) or the coordinator stays silent for
``PING_TIMEOUT`` seconds. Then it kills every process of the run (they carry ``MAPRED_TOKEN`` in
their environment: workers, the daemon, fetches), removes the scratch directory and exits, so
nothing of the run is left running or listening.

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
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mapred import paths, rsyncd, workdir
from mapred.rsyncd import FETCH_TIMEOUT, PASSWORD_FILE, SHUFFLE_DIR
from mapred.words import plural

TOKEN_ENV = "MAPRED_TOKEN"  # noqa: S105 - no secret: tags every process of a run on a host
FETCH_CONNECT_TIMEOUT = 10
FETCH_TRIES = 2
# agent: seconds without a word from the coordinator before it cleans up. The coordinator pings
# every second and gives a silent host up after 10 s (remote.DEAD_AFTER): this must be longer.
PING_TIMEOUT = 30.0
ALIVE_SECONDS = 1.0  # the agent's heartbeat: what the coordinator's liveness check listens to
CACHE_MAX_AGE = 14 * 86400  # cached shards unused this long are evicted at the next run start
STALE_TEMP_AGE = 86400
STALE_RUN_AGE = 3600  # a run dir being made (no lock yet) older than this is abandoned
LOCK_FILE = ".agent.lock"  # in a run dir: flocked by its live agent
KEEP_DIR = "keep"  # WORKDIR/keep/RUN_ID: committed map outputs of a run whose coordinator vanished
WORKDIR_SUBDIRS = ("runs", "cache", "jobs", KEEP_DIR)  # checked like the workdir (mapred.workdir)
KEEP_MAX_AGE = 7 * 86400  # kept outputs nobody resumed are removed after this long
MAX_GET = 1 << 20  # agent "get": files up to this size come back inline
HASH_CHUNK = 1 << 20

_REL_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_URL_RE = re.compile(r"(rsync://[^/]+/[^/]+/)(.+)")
_RUN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FETCH_HOST_RE = re.compile(r"FetchError: (?:fetching [\d,]+ map outputs? from|map output \S+ "
                            r"from) host (\S+) ")
_OUTPUT_RE = re.compile(r"\b(m\d+\.\w+/p\d+-\d+\.run)\b")
KEPT = ".kept"  # under the scratch dir: hard links of committed map outputs


class FetchError(Exception):
    """A map output could not be fetched; the message names the source host and rsync's error."""


def fetch_error_host(error: str) -> str | None:
    """The source host named by a reduce attempt's error when a fetch from it failed, else None."""
    m = _FETCH_HOST_RE.search(error)
    return m[1] if m else None


def lost_outputs(error: str) -> list[str]:
    """``ATTEMPT/pNNNNN-SSSS.run`` map outputs a failed fetch found missing or damaged (not a
    connection problem: those name no file)."""
    if "FetchError" not in error or not any(
            w in error for w in ("No such file", "damaged", "cannot be read", "(code 23)")):
        return []
    return sorted(set(_OUTPUT_RE.findall(error)))


def file_sum(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


# --- shuffle fetch (reducer side) ------------------------------------------------------------


def localize(inputs: list[Any], dest: Path, scratch: Path) -> list[str]:
    """Local paths for a reduce request's ``inputs``, fetching remote ones into ``dest``; every
    input that names its ``size``/``sha256`` is checked (FetchError naming its host if wrong)."""
    if all(isinstance(i, str) for i in inputs):
        return list(inputs)
    groups: dict[str, list[tuple[int, str]]] = {}
    labels: dict[str, str] = {}
    out: list[str] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            out.append(item)
            continue
        if "path" in item:
            out.append(str(item["path"]))
            continue
        base, rel = _split_url(str(item["url"]))
        groups.setdefault(base, []).append((index, rel))
        labels[base] = str(item.get("host") or base)
        out.append("")
    if groups:
        password = _read_password(scratch)
        targets = {base: dest / f"src{n}" for n, base in enumerate(groups)}
        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            futures = [pool.submit(_fetch_group, base, [rel for _, rel in items], targets[base],
                                   password, labels[base]) for base, items in groups.items()]
            for f in futures:
                f.result()
        for base, items in groups.items():
            for index, rel in items:
                out[index] = str(targets[base] / rel)
    for item, path in zip(inputs, out, strict=True):
        if isinstance(item, dict) and ("size" in item or "sha256" in item):
            _check_input(Path(path), item)
    return out


def _check_input(path: Path, item: dict[str, Any]) -> None:
    """The map output at ``path`` is exactly what its attempt committed, or FetchError."""
    host = str(item.get("host") or "this host")
    name = f"{path.parent.name}/{path.name}"  # ATTEMPT/pNNNNN-SSSS.run
    try:
        size, digest = file_sum(path) if "sha256" in item else (path.stat().st_size, "")
    except OSError as e:
        raise FetchError(f"map output {name} from host {host} cannot be read: "
                         f"{e.strerror}") from e
    if "size" in item and size != int(item["size"]):
        raise FetchError(f"map output {name} from host {host} is damaged: {size} bytes, "
                         f"committed with {int(item['size'])}")
    if "sha256" in item and digest != item["sha256"]:
        raise FetchError(f"map output {name} from host {host} is damaged: its sha256 "
                         "differs from the committed file's")


def _split_url(url: str) -> tuple[str, str]:
    m = _URL_RE.fullmatch(url)
    if m is None or not _REL_RE.fullmatch(m[2]) or ".." in m[2].split("/"):
        raise FetchError(f"not a shuffle URL: {url[:200]!r}")
    return m[1], m[2]


def _read_password(scratch: Path) -> str:
    try:
        return (scratch / SHUFFLE_DIR / PASSWORD_FILE).read_text().strip()
    except OSError as e:
        raise FetchError(f"no shuffle password in the run's scratch dir: {e.strerror}") from e


def _fetch_group(base: str, rels: list[str], target: Path, password: str, label: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    argv = ["rsync", "-s", f"--timeout={FETCH_TIMEOUT}", f"--contimeout={FETCH_CONNECT_TIMEOUT}",
            "--files-from=-", "--from0", "--", base, str(target) + "/"]
    env = dict(os.environ, RSYNC_PASSWORD=password)
    listing = b"\0".join(r.encode() for r in rels) + b"\0"
    error = ""
    for attempt in range(FETCH_TRIES):
        try:
            proc = subprocess.run(argv, input=listing, capture_output=True, env=env,
                                  timeout=FETCH_TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            error = f"no answer after {FETCH_TIMEOUT * 2}s"
            continue
        except OSError as e:
            raise FetchError(f"cannot run rsync to fetch map outputs from {label}: {e}") from e
        if proc.returncode == 0:
            return
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        error = f"rsync exit {proc.returncode}: {' | '.join(tail)}"
        if attempt + 1 < FETCH_TRIES:
            time.sleep(0.5)
    raise FetchError(f"fetching {plural(len(rels), 'map output')} from host {label} ({base}) "
                     f"failed: {error}")


# --- the host agent --------------------------------------------------------------------------


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
        self._check_workdir()
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in WORKDIR_SUBDIRS:
            (self.workdir / d).mkdir(exist_ok=True, mode=0o700)
        self._check_workdir()  # again once created: nothing raced in meanwhile
        self._sweep_runs()
        kept = self._sweep_kept()
        self._make_scratch()
        address = _server_address()
        if self.secret and self.shuffle in ("direct", "relay"):
            bind = address if self.shuffle == "direct" else "127.0.0.1"
            self.daemon = rsyncd.Daemon(self.scratch, self.cache, self.secret)
            self.daemon_info = self.daemon.start(bind)
        return {"ev": "started", "pid": os.getpid(), "workdir": str(self.workdir),
                "scratch": str(self.scratch), "python": list(sys.version_info[:3]),
                "mapred": _mapred_version(), "cores": _cores(), "free": _free(self.workdir),
                "address": address, "addresses": rsyncd.local_addresses(),
                "daemon": self.daemon_info, "rsync": bool(
                    shutil.which("rsync")), "cache": self._cache_listing(),
                "jobs": sorted(_listing(self.jobs)), "kept": kept}

    def _check_workdir(self) -> None:
        why = workdir.problem(str(self.workdir), WORKDIR_SUBDIRS)
        if why is not None:
            raise UnsafeWorkdir(f"workdir refused: {why}")

    def _make_scratch(self) -> None:
        """The run dir appears (a rename) only once its lock is held: a sweep by another agent
        never sees it without a lock, whenever this one is killed."""
        tmp = self.scratch.with_name(f".{self.token}.{secrets.token_hex(4)}")
        tmp.mkdir(mode=0o700)
        self.lock_fd = os.open(tmp / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        for sub in ("map", "out", "tmp", SHUFFLE_DIR):
            (tmp / sub).mkdir(mode=0o700)
        os.rename(tmp, self.scratch)

    def _sweep_kept(self) -> list[str]:
        """Run ids with kept map outputs; those older than KEEP_MAX_AGE are removed first."""
        now, out = time.time(), []
        for d in self.kept.iterdir():
            try:
                age = now - d.stat().st_mtime
            except OSError:
                continue
            if age > KEEP_MAX_AGE or not _RUN_RE.fullmatch(d.name):
                paths.remove(d)
            else:
                out.append(d.name)
        return sorted(out)

    def _sweep_runs(self) -> None:
        """Remove run dirs of earlier runs whose agent is gone (a crash, a power cut)."""
        now = time.time()
        for d in (self.workdir / "runs").iterdir():
            try:
                fd = os.open(d / LOCK_FILE, os.O_RDWR)
            except OSError:  # a run dir has its lock from the start and loses it last
                starting = d.name.startswith(".")  # (unless it is being made, see above)
                if not starting or now - d.lstat().st_mtime > STALE_RUN_AGE:
                    paths.remove(d)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it
            finally:
                os.close(fd)
            shutil.rmtree(d, ignore_errors=True)

    def _cache_listing(self) -> list[str]:
        """Names of cached shards; evicts stale ones and abandoned temporary files first."""
        now = time.time()
        names = []
        for entry in os.scandir(self.cache):
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            stale = STALE_TEMP_AGE if entry.name.startswith(".") else CACHE_MAX_AGE
            if age > stale:
                paths.remove(Path(entry.path))
            elif not entry.name.startswith("."):
                names.append(entry.name)
        return sorted(names)

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
        reply: dict[str, Any] = {"ev": "reply", "id": msg.get("id")}
        try:
            if op == "stop":
                return False
            if op == "rm":  # files of discarded attempts; a cache entry proven wrong
                for p in msg.get("paths", []):
                    root = self.cache if Path(p).parent == self.cache else self.scratch
                    paths.remove(self._inside(p, root))
            elif op == "kill":
                for pid in msg.get("pids", []):
                    if _tagged(int(pid), self.token):
                        _kill_group(int(pid))
            elif op == "put":
                self._put(msg)
            elif op == "get":
                reply.update(self._get(msg))
            elif op in ("pull", "verify", "sums"):  # slow: on a thread, replies when done
                threading.Thread(target=self._slow, args=(msg,), daemon=True).start()
                return True
            elif op == "touch":
                for name in msg.get("names", []):
                    if _REL_RE.fullmatch(name) and "/" not in name:
                        _touch(self.cache / name)
            elif op == "allow":  # the run's hosts: their daemons' peers
                if self.daemon is not None:
                    self.daemon.allow([str(a) for a in msg.get("addresses", [])])
            elif op == "keep":
                self._note_keep(msg)
            elif op == "adopt":
                reply.update(self._adopt(str(msg["run"])))
            elif op == "forget":
                for run in msg.get("runs", []):
                    if _RUN_RE.fullmatch(str(run)):
                        paths.remove(self.kept / str(run))
        except Exception as e:  # noqa: BLE001 - reported to the coordinator
            reply["error"] = f"{type(e).__name__}: {e}"
        if msg.get("id") is not None:
            self.send(reply)
        return True

    def _inside(self, path: str, root: Path) -> Path:
        p = Path(os.path.normpath(path if os.path.isabs(path) else root / path))
        if not p.is_relative_to(root) or p == root:
            raise ValueError(f"path outside {root}: {path!r}")
        return p

    def _put(self, msg: dict[str, Any]) -> None:
        rel = str(msg["path"])
        if not _REL_RE.fullmatch(rel) or ".." in rel.split("/"):
            raise ValueError(f"bad path {rel!r}")
        path = self._inside(rel, self.workdir)
        data = base64.b64decode(msg["data"])
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return  # already there, the same bytes (a job module's name is its hash)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _slow(self, msg: dict[str, Any]) -> None:
        """Serve a request that takes time (transfer, hashing) off the request loop."""
        reply: dict[str, Any] = {"ev": "reply", "id": msg.get("id")}
        try:
            if msg.get("op") == "pull":
                self._pull(msg)
            elif msg.get("op") == "verify":
                self._verify(msg)
            else:
                reply["sums"] = {p: list(file_sum(self._inside(p, self.scratch / "map")))
                                 for p in msg.get("paths", [])}
        except Exception as e:  # noqa: BLE001 - reported to the coordinator
            reply["error"] = f"{type(e).__name__}: {e}"
        if msg.get("id") is not None:
            self.send(reply)

    def _pull(self, msg: dict[str, Any]) -> None:
        """Copy a cached shard from another host's daemon into our cache."""
        name = str(msg["name"])
        if not re.fullmatch(r"[0-9a-f]{64}", name):
            raise ValueError(f"bad cache name {name!r}")
        base, rel = _split_url(str(msg["url"]))
        if rel != name:
            raise ValueError("url and name disagree")
        if not (self.cache / name).exists():
            _fetch_group(base, [rel], self.cache, self.secret, str(msg.get("host", base)))

    def _verify(self, msg: dict[str, Any]) -> None:
        """A cached shard is whole: its size, and its sha256 is its name; if not, it goes."""
        name = str(msg["name"])
        if not re.fullmatch(r"[0-9a-f]{64}", name):
            raise ValueError(f"bad cache name {name!r}")
        path = self.cache / name
        size, digest = file_sum(path)
        if size != int(msg["size"]) or digest != name:
            paths.remove(path)
            raise ValueError(f"cached shard {name[:12]} is damaged ({size} bytes, expected "
                             f"{int(msg['size'])}): removed")

    def _note_keep(self, msg: dict[str, Any]) -> None:
        """Hard-link a committed attempt's files under ``.kept`` (same relative layout)."""
        run = str(msg["run"])
        if not _RUN_RE.fullmatch(run):
            raise ValueError(f"bad run id {run!r}")
        self.keep_run = run
        for p in msg.get("paths", []):
            src = self._inside(str(p), self.scratch / "map")
            dst = self.scratch / KEPT / src.relative_to(self.scratch)
            for dirpath, _, names in os.walk(src):
                target = dst / Path(dirpath).relative_to(src)
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
                for n in names:
                    try:
                        os.link(Path(dirpath) / n, target / n)
                    except FileExistsError:
                        pass

    def _adopt(self, run: str) -> dict[str, Any]:
        """Move a crashed run's kept map outputs into this run's scratch (served by our daemon).

        Returns ``root`` (where the old run's ``map`` dir now is) and ``files`` (path relative to
        it -> size)."""
        if not _RUN_RE.fullmatch(run):
            raise ValueError(f"bad run id {run!r}")
        src = self.kept / run / "map"
        dst = self.scratch / "map" / "resumed" / run
        files: dict[str, int] = {}
        if src.is_dir():
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(src, dst)
            for dirpath, _, names in os.walk(dst):
                for n in names:
                    p = Path(dirpath) / n
                    files[str(p.relative_to(dst))] = p.stat().st_size
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

    def _get(self, msg: dict[str, Any]) -> dict[str, Any]:
        path = self._inside(str(msg["path"]), self.scratch)
        size = path.stat().st_size
        if size > int(msg.get("max", MAX_GET)):
            return {"size": size}
        return {"size": size, "data": base64.b64encode(path.read_bytes()).decode()}

    # --- stop ---------------------------------------------------------------------------------

    def cleanup(self, keep: bool = False) -> None:
        """Kill every process of the run, stop the daemon, remove the scratch dir; with ``keep``
        (the coordinator vanished) committed map outputs are kept for ``--resume`` first."""
        if self.stopping:
            return
        self.stopping = True
        if self.daemon is not None:
            self.daemon.stop()
        deadline = time.monotonic() + 5
        while True:
            pids = _tagged_pids(self.token)
            if not pids or time.monotonic() > deadline:
                break
            for pid in pids:
                _kill_group(pid)
            time.sleep(0.02)
        if keep:
            self._keep_committed()
        _remove_locked(self.scratch)


def _remove_locked(scratch: Path) -> None:
    """Remove a run dir, its lock last: killed halfway, what is left still has a free lock, and
    the next agent's sweep removes it at once."""
    if not scratch.is_dir():
        return
    for entry in scratch.iterdir():
        if entry.name != LOCK_FILE:
            paths.remove(entry)
    paths.remove(scratch / LOCK_FILE)
    shutil.rmtree(scratch, ignore_errors=True)


def _server_address() -> str:
    """This host's address on the coordinator's SSH connection (what the LAN reaches it by)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return parts[2] if len(parts) == 4 else "127.0.0.1"


def _mapred_version() -> str | None:
    try:
        from mapred import __version__
    except ImportError:
        return None
    return __version__


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _listing(directory: Path) -> list[str]:
    """``DIGEST/MAIN`` of every job directory that is whole (``jobfiles.verify``: its manifest
    hashes to its name, its files to the manifest); one that is not (changed on this host, or
    half shipped) is removed, so the coordinator ships it again. Directories of single job
    modules named by their own hash (mapred before jobs had modules) are checked the old way."""
    from mapred import jobfiles

    out = []
    for d in directory.iterdir():
        if d.is_dir() and not d.is_symlink() and not d.name.startswith("."):
            if (d / jobfiles.MANIFEST).exists():
                if jobfiles.verify(d):
                    main = json.loads((d / jobfiles.MANIFEST).read_bytes())["main"]
                    out.append(f"{d.name}/{main}")
                else:
                    paths.remove(d)
                continue
            if time.time() - d.stat().st_mtime < 600:
                continue  # maybe being shipped now by another run: its manifest comes last
            for f in d.iterdir():
                if f.name.startswith("."):
                    continue
                if f.is_file() and not f.is_symlink() and \
                        hashlib.sha256(f.read_bytes()).hexdigest() == d.name:
                    out.append(f"{d.name}/{f.name}")
                else:
                    paths.remove(f)
    return out


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _tagged(pid: int, token: str) -> bool:
    needle = f"{TOKEN_ENV}={token}".encode()
    return needle in _environ(pid).split(b"\0")


def _tagged_pids(token: str) -> list[int]:
    me = os.getpid()
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    return [p for p in pids if p != me and _tagged(p, token)]


def _kill_group(pid: int) -> None:
    """SIGKILL pid's process group (each worker is its own session), or pid alone."""
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return
    try:
        if pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


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


def agent_main() -> None:
    """``python -m mapred.fetch agent``: serve one run on this host, then clean up."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    agent = Agent(json.loads(sys.stdin.readline() or "{}"), out)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        agent.send(agent.start())
    except Exception as e:  # noqa: BLE001 - the coordinator shows it with the host's name
        agent.send({"ev": "start_failed", "error": f"{type(e).__name__}: {e}"})
        agent.cleanup()
        os._exit(1)
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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["agent"]:
        agent_main()
    print("usage: python -m mapred.fetch agent", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
