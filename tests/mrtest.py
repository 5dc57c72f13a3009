"""Helpers shared by the tests: real text, the awkward corpus's files, running the CLI."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import sysdeps

FORTUNES = Path("/usr/share/games/fortunes")
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
ROOT = Path(__file__).resolve().parent.parent


def _need(path: Path) -> Path:
    return Path(sysdeps.need(str(path)))


def real_text_files() -> list[Path]:
    """Real text files from Debian packages: fortunes, and the GCIDE dictionary (gzip/dictzip)."""
    return [_need(FORTUNES / "fortunes"), _need(GCIDE)]


AWKWARD_FILES: dict[str, bytes] = {
    "crlf.txt": b"one two\r\nthree  four\r\n\r\nfive\r\n",
    "no-final-newline.txt": b"alpha beta\ngamma delta epsilon",
    "empty.txt": b"",
    "only-newlines.txt": b"\n\n\n",
    "long-line.txt": (b"long " * 50_000) + b"\nshort line\n" + b"x" * 300_000,
    "invalid-utf8.txt": b"caf\xe9 na\xefve \xff\xfe tab\there\n\xc3\x28 ok\n",
    "binary.bin": bytes(range(256)) * 8 + b"\x00\x00 nul\x00sep \x0b\x0c\x1c\x1d\n",
    "with space and 'quotes\".txt": b"quoted name file\nerror in quoted\n",
    "$(touch PWNED).txt": b"injection attempt error\n",
    "-leading-dash.txt": b"dash file error here\n",
    "ünïcödé-名前.txt": "ünïcödé words 名前 error\n".encode(),
    "backslash\\name.txt": b"a\\b c\\\\d error\\n literal\n",
    "sub/dir/nested.txt": b"nested file words\nerror nested\n",
    "sub/.hidden-file.txt": b"must be skipped\n",
    ".hidden-dir/file.txt": b"must be skipped too\n",
}


def corpus_files(root: Path) -> list[tuple[str, bytes]]:
    """Independent reader: (relative name, decompressed content) of every non-hidden file."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            out.append((os.fsdecode(path.relative_to(root)), data))
    return out


def run_mapred(*args: str | Path, check: bool = True, env: dict[str, str] | None = None,
               cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m mapred.cli.main ARGS`` without a terminal; return the completed process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "mapred.cli.main", *map(str, args)],
        capture_output=True, stdin=subprocess.DEVNULL, env=full_env, cwd=cwd or ROOT,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mapred exited {proc.returncode}:\n{proc.stderr.decode()}"
                             f"\nstdout:\n{proc.stdout.decode()}")
    return proc


def read_output(out: Path) -> dict[bytes, bytes]:
    """Parse part files into {escaped key: value field(s)}; assert the format on the way."""
    assert (out / "_SUCCESS").is_file()
    result: dict[bytes, bytes] = {}
    for part in sorted(out.glob("part-*")):
        data = part.read_bytes()
        assert data == b"" or data.endswith(b"\n"), part
        keys = []
        for line in data.split(b"\n")[:-1]:
            key, sep, value = line.partition(b"\t")
            assert sep, (part, line)
            assert key not in result, f"key {key!r} in two parts"
            result[key] = value
            keys.append(unescape(key))
        assert keys == sorted(keys), f"{part} is not sorted by key"
    return result


def escape(raw: bytes) -> bytes:
    """Reference escaping, written independently of mapred.worker.partition."""
    table = {0x5C: b"\\\\", 0x09: b"\\t", 0x0A: b"\\n", 0x0D: b"\\r"}
    return b"".join(table.get(b, bytes([b])) for b in raw)


def unescape(text: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == 0x5C:
            out += {ord("\\"): b"\\", ord("t"): b"\t", ord("n"): b"\n", ord("r"): b"\r"}[
                text[i + 1]]
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)
