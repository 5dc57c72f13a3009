"""The reducer side of the shuffle (worker side, standard library only): fetching map outputs.

A reduce request's ``inputs`` may hold, next to plain local paths, dicts
``{"url": "rsync://mapred@ADDR:PORT/map/ATTEMPT/pNNNNN-SSSS.run", "host": NAME}``: map outputs on
another host, served by that host's per-job rsync daemon. :func:`localize` fetches them (one rsync
per source host, the file list NUL-separated on stdin, the password in ``RSYNC_PASSWORD`` read from
the run's private ``.shuffle/password`` file, never on a command line) and returns local paths in
the order of ``inputs`` (the merge order of equal keys must not depend on where a run was made).
An input may carry the ``size`` and ``sha256`` its map attempt had when it committed (a local one is
then ``{"path": PATH, "size": N, "sha256": HEX}``): every such file is checked before the reduce
reads it, so a truncated or damaged partial is never merged.

The host agent is :mod:`mapred.worker.agent`; ``python -m mapred.worker.fetch agent`` still starts it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mapred.limits import FETCH_CONNECT_TIMEOUT, FETCH_TRIES
from mapred.words import plural
from mapred.worker.rsyncd import FETCH_TIMEOUT, PASSWORD_FILE, SHUFFLE_DIR
from mapred.worker.workdir import WORKDIR_SUBDIRS as WORKDIR_SUBDIRS  # (re-exported: cli_hosts)

HASH_CHUNK = 1 << 20

REL_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_URL_RE = re.compile(r"(rsync://[^/]+/[^/]+/)(.+)")
_FETCH_HOST_RE = re.compile(r"FetchError: (?:fetching [\d,]+ map outputs? from|map output \S+ "
                            r"from) host (\S+) ")
_OUTPUT_RE = re.compile(r"\b(m\d+\.\w+/p\d+-\d+\.run)\b")


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
        base, rel = split_url(str(item["url"]))
        groups.setdefault(base, []).append((index, rel))
        labels[base] = str(item.get("host") or base)
        out.append("")
    if groups:
        password = _read_password(scratch)
        targets = {base: dest / f"src{n}" for n, base in enumerate(groups)}
        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            futures = [pool.submit(fetch_group, base, [rel for _, rel in items], targets[base],
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


def split_url(url: str) -> tuple[str, str]:
    m = _URL_RE.fullmatch(url)
    if m is None or not REL_RE.fullmatch(m[2]) or ".." in m[2].split("/"):
        raise FetchError(f"not a shuffle URL: {url[:200]!r}")
    return m[1], m[2]


def _read_password(scratch: Path) -> str:
    try:
        return (scratch / SHUFFLE_DIR / PASSWORD_FILE).read_text().strip()
    except OSError as e:
        raise FetchError(f"no shuffle password in the run's scratch dir: {e.strerror}") from e


def fetch_group(base: str, rels: list[str], target: Path, password: str, label: str) -> None:
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


def main(argv: list[str] | None = None) -> None:
    """``python -m mapred.worker.fetch agent``: the host agent's former command
(:mod:`mapred.worker.agent`)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["agent"]:
        from mapred.worker.agent import agent_main

        agent_main()
    print("usage: python -m mapred.worker.agent", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
