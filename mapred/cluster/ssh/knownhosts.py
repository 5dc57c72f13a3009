"""known_hosts files, read as OpenSSH reads them, and the one rule for remembering a new key.

:func:`read` parses the files of an :class:`~mapred.cluster.ssh.config.SSHTarget` into :class:`KnownHosts`:
plain lines become paramiko host keys (hashed ``|1|`` names included); marker lines are honoured
the way OpenSSH honours them, as far as paramiko can follow:

* ``@revoked`` — that key is never accepted, for any host, not even with
  ``--accept-new-host-keys`` (OpenSSH matches the line's host patterns; a revoked key is
  compromised, so mapred refuses it everywhere);
* ``@cert-authority`` — paramiko does not verify host certificates, so such lines grant nothing on
  the paramiko path; a host trusted only through one is refused with a line saying so.

Any malformed line is a :class:`~mapred.errors.ConfigError` (exit 2) naming the file and the line.
A line with a key type paramiko does not know is skipped, as OpenSSH skips types it does not know.

:func:`accept_new_refusal` is the rule both SSH paths (paramiko and the OpenSSH argv) follow: a new
key may be accepted only into a regular, writable file — ``/dev/null``, a FIFO or an unwritable
file would forget it, so every run would accept any key.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from mapred.errors import ConfigError

MARKERS = ("@cert-authority", "@revoked")


@dataclass
class KnownHosts:
    """The trusted keys (a paramiko ``HostKeys``), the revoked key blobs, where CAs were listed."""

    keys: Any
    revoked: dict[bytes, str] = field(default_factory=dict)  # key blob -> "FILE line N"
    authorities: list[str] = field(default_factory=list)  # "FILE line N" of @cert-authority lines

    def revocation(self, key: Any) -> str | None:
        """Where ``key`` is revoked ("FILE line N"), or None."""
        return self.revoked.get(key.asbytes())


def _key_blob(where: str, key_type: str, data: str) -> bytes:
    try:
        blob = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigError(f"{where}: the {key_type} key is not valid base64") from None
    if not blob:
        raise ConfigError(f"{where}: empty key")
    return blob


def _parse_line(line: str, where: str) -> tuple[str | None, list[str], str, str]:
    """(marker or None, host names, key type, base64 key) of one non-comment line."""
    words = line.split()
    marker = None
    if words[0].startswith("@"):
        marker = words.pop(0)
        if marker not in MARKERS:
            raise ConfigError(f"{where}: unknown marker {marker!r} (OpenSSH knows "
                              f"{' and '.join(MARKERS)})")
    if len(words) < 3:
        raise ConfigError(f"{where}: expected 'hosts key-type base64-key', found {line!r}")
    return marker, words[0].split(","), words[1], words[2]


def read(files: tuple[str, ...] | list[str]) -> KnownHosts:
    """The keys of every existing file in ``files`` (a missing file holds none)."""
    import paramiko

    known = KnownHosts(paramiko.HostKeys())
    trusted: list[tuple[list[str], Any]] = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise ConfigError(f"{path}: known_hosts is a directory") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read known_hosts: {e.strerror or e}") from None
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path} line {number}"
            marker, names, key_type, data = _parse_line(line, where)
            blob = _key_blob(where, key_type, data)
            if marker == "@revoked":
                known.revoked[blob] = where
                continue
            if marker == "@cert-authority":
                known.authorities.append(where)
                continue
            try:
                key = paramiko.PKey.from_type_string(key_type, blob)
            except paramiko.UnknownKeyType:
                continue  # a type this paramiko does not know: OpenSSH skips those too
            except Exception as e:  # paramiko raises several types for a bad blob
                raise ConfigError(f"{where}: invalid {key_type} key ({e})") from None
            trusted.append((names, key))
    for names, key in trusted:
        if key.asbytes() not in known.revoked:  # a revoked key is not trusted, wherever listed
            for name in names:
                known.keys.add(name, key.get_name(), key)
    return known


def accept_new_refusal(files: tuple[str, ...] | list[str]) -> str | None:
    """Why a new host key cannot be remembered in ``files[0]`` (None: it can)."""
    if not files:
        return "no known_hosts file is configured"
    path = files[0]
    forgets = "a key accepted there would be forgotten, so every run would accept any key"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            return f"known_hosts {path} does not exist and cannot be created in {parent}"
        return None
    except OSError as e:
        return f"known_hosts {path} cannot be read: {e.strerror or e}"
    if os.path.realpath(path) == os.devnull or not stat.S_ISREG(st.st_mode):
        return f"known_hosts {path} is not a regular file ({forgets})"
    if not os.access(path, os.W_OK):
        return f"known_hosts {path} is not writable ({forgets})"
    return None
