"""``hosts.toml`` -> frozen :class:`Cluster` of :class:`Host`; every hosts.toml default lives here.

* :func:`load_hosts` parses a hosts file once, at the edge. Every problem raises
  :class:`~mapred.errors.ConfigError` with one line naming the file, the host (``host 'h1'``, or
  ``host #N`` when it has no usable name) and the key.
* :func:`embedded_default` is the cluster used without a hosts file: this machine, all cores, no
  SSH. ``address = "local"`` in a hosts file means the same kind of host.
* :func:`resolve_ssh` turns a remote :class:`Host` into an :class:`SSHTarget` through
  ``~/.ssh/config``; :func:`ssh_command_args` and :func:`rsync_rsh` (from :mod:`mapred.cluster.ssh.config`)
  give OpenSSH the very same target, so the paramiko path and the rsync path cannot disagree.

Worker-side modules must not import this module. paramiko is imported lazily (in
:func:`resolve_ssh`) so ``import mapred.cluster.hosts`` stays fast.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
import socket
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from mapred.cluster.ssh.config import (
    Resolver,
    SSHTarget,
    load_ssh_config,
    rsync_remote,
    rsync_rsh,
    ssh_command_args,
)
from mapred.errors import ConfigError
from mapred.limits import MAX_CONNECT_TIMEOUT
from mapred.modes import DEFAULT_SHUFFLE, DIRECT, RELAY, SHUFFLE_MODES, Shuffle

__all__ = [
    "Cluster",
    "Host",
    "SSHTarget",
    "embedded_default",
    "load_hosts",
    "parse_memory",
    "resolve_ssh",
    "rsync_remote",
    "rsync_rsh",
    "ssh_command_args",
]

# --- every default, in one place -------------------------------------------------------------

LOCAL_ADDRESS = "local"  # address meaning "this machine, no SSH"
DEFAULT_PYTHON = "python3"  # interpreter on a remote host; a local host uses sys.executable
DEFAULT_WORKDIR = "~/.cache/mapred"  # expanded on the host it names, not here


@dataclass(frozen=True)
class Host:
    """One host of the cluster, with every hosts.toml default applied.

    ``user``/``port``/``identity``/``known_hosts`` stay ``None`` when not set in hosts.toml so
    that ``~/.ssh/config`` can supply them (see :func:`resolve_ssh`). ``cores``/``memory`` are
    ``None`` when they are to be detected at run time. ``local`` hosts are reached without SSH.
    """

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    python: str = DEFAULT_PYTHON
    workdir: str = DEFAULT_WORKDIR
    cores: int | None = None
    memory: int | None = None
    connect_timeout: float | None = None  # seconds; None: ~/.ssh/config's, else CONNECT_TIMEOUT
    local: bool = False
    python_from: str = field(default="builtin", compare=False)  # "host", "defaults", "builtin"


@dataclass(frozen=True)
class Cluster:
    """The hosts of a run, where they came from (``None``: embedded default), the shuffle mode."""

    hosts: tuple[Host, ...]
    source: Path | None = None
    shuffle: Shuffle = DEFAULT_SHUFFLE

    def host(self, name: str) -> Host:
        """The host called ``name``; KeyError if there is none."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


# --- hosts.toml ------------------------------------------------------------------------------


class _Bad(Exception):
    """A value is invalid; the message says what was expected and what was found."""


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# IP (v4, bare v6 with optional %scope), DNS name or ssh_config alias; never an option ("-o...").
_ADDRESS_RE = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:%-]*")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?|B)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _show(value: object, limit: int = 60) -> str:
    """A short, single-line rendering of a value from the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _toml_type(value: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (dict, "table"),
        (list, "array"),
        (datetime.datetime, "datetime"),
        (datetime.date, "date"),
        (datetime.time, "time"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _found(value: object) -> str:
    kind = _toml_type(value)
    return kind if isinstance(value, dict | list) else f"{kind} {_show(value)}"


def _expect(what: str, value: object) -> _Bad:
    return _Bad(f"expected {what}, found {_found(value)}")


def _text(value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise _expect("a string", value)
    if not value.strip() or _CONTROL_RE.search(value):
        raise _expect("a non-empty string without control characters", value)
    return value


def _name(value: Any, base: Path) -> str:
    text = _text(value, base)
    if not _NAME_RE.fullmatch(text) or text in (".", "..") or text.startswith("-"):
        raise _expect("a name made of A-Z a-z 0-9 _ . - (not starting with '-')", value)
    return text


def _address(value: Any, base: Path) -> str:
    text = _text(value, base)
    if not _ADDRESS_RE.fullmatch(text):
        raise _expect(f"an IP address, DNS name, ssh config alias or {LOCAL_ADDRESS!r}", value)
    return text


def _user(value: Any, base: Path) -> str:
    text = _text(value, base)
    if text.startswith("-") or any(c.isspace() for c in text):
        raise _expect("a user name (no whitespace, not starting with '-')", value)
    return text


def _int_in(value: Any, low: int, high: int | None, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expect(what, value)
    if value < low or (high is not None and value > high):
        raise _expect(what, value)
    return value


def _port(value: Any, _base: Path) -> int:
    return _int_in(value, 1, 65535, "an integer 1..65535")


def _cores(value: Any, _base: Path) -> int:
    return _int_in(value, 1, None, "an integer >= 1")


def _seconds(value: Any, _base: Path) -> float:
    what = f"a number of seconds, more than 0 and at most {MAX_CONNECT_TIMEOUT}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expect(what, value)
    if not 0 < value <= MAX_CONNECT_TIMEOUT:
        raise _expect(what, value)
    return float(value)


def _path(value: Any, base: Path) -> Path:
    path = Path(_text(value, base)).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def parse_memory(value: object) -> int:
    """Bytes from an int, or a string like ``"512M"``/``"2G"``/``"1.5GiB"`` (powers of 1024).

    Raises ValueError (with the expected form) for anything else, or for less than one byte.
    """
    what = 'a byte count: an integer or a string like "512M", "2G" (K/M/G/T = 1024^n)'
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return value
        raise ValueError(f"expected {what}, found {_found(value)}")
    match = _MEMORY_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected {what}, found {_found(value)}")
    size = int(Fraction(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").upper()])
    if size < 1:
        raise ValueError(f"expected {what} of at least one byte, found {_found(value)}")
    return size


def _memory(value: Any, _base: Path) -> int:
    try:
        return parse_memory(value)
    except ValueError as e:
        raise _Bad(str(e)) from None


_Converter = Callable[[Any, Path], Any]
HOST_KEYS: Mapping[str, _Converter] = {
    "name": _name,
    "address": _address,
    "user": _user,
    "port": _port,
    "identity": _path,
    "known_hosts": _path,
    "python": _text,
    "workdir": _text,
    "cores": _cores,
    "memory": _memory,
    "connect_timeout": _seconds,
}
REQUIRED_KEYS = ("name", "address")
PER_HOST_KEYS = frozenset(REQUIRED_KEYS)  # may not appear in [defaults]
SSH_ONLY_KEYS = frozenset({"user", "port", "identity", "known_hosts",
                           "connect_timeout"})  # meaningless for a local host
TOP_LEVEL_KEYS = ("defaults", "host", "shuffle")


@dataclass(frozen=True)
class _Where:
    """Where in the hosts file an error is: the file, and the host or section."""

    file: str
    section: str | None = None

    def error(self, key: str | None, problem: str) -> ConfigError:
        parts = [self.file]
        if self.section:
            parts.append(self.section)
        if key is not None:
            parts.append(f"key {_show(key)}")
        parts.append(problem)
        return ConfigError(_one_line(": ".join(parts)))


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _convert(
    table: Mapping[str, Any], where: _Where, base: Path, allowed: Mapping[str, _Converter]
) -> dict[str, Any]:
    """Each key of ``table`` converted by its converter; unknown keys are errors."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        convert = allowed.get(key)
        if convert is None:
            raise where.error(key, f"unknown key{_suggest(key, allowed)}")
        try:
            out[key] = convert(value, base)
        except _Bad as e:
            raise where.error(key, str(e)) from None
    return out


def _read_toml(path: Path, where: _Where) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise where.error(None, "hosts file not found") from None
    except OSError as e:
        raise where.error(None, f"cannot read hosts file: {e.strerror or e}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise where.error(None, f"not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:  # its message ends "(at line L, column C)"
        raise where.error(None, f"invalid TOML: {e}") from None


def _parse_defaults(value: object, file: str, base: Path) -> dict[str, Any]:
    where = _Where(file, "[defaults]")
    if not isinstance(value, dict):
        raise _Where(file).error("defaults", f"expected a table, found {_found(value)}")
    for key in PER_HOST_KEYS & value.keys():
        raise where.error(key, "cannot be set in [defaults]: it is different for every host")
    return _convert(value, where, base, HOST_KEYS)


def _host_label(index: int, table: object) -> str:
    """``host 'h1'`` when the table has a valid name, else ``host #N`` (1-based)."""
    try:
        return f"host {_name(table.get('name') if isinstance(table, dict) else None, Path())!r}"
    except _Bad:
        return f"host #{index}"


def _parse_host(
    index: int, table: object, defaults: Mapping[str, Any], file: str, base: Path
) -> Host:
    where = _Where(file, _host_label(index, table))
    if not isinstance(table, dict):
        raise where.error(None, f"expected a table ([[host]]), found {_found(table)}")
    values = _convert(table, where, base, HOST_KEYS)
    for key in REQUIRED_KEYS:
        if key not in values:
            raise where.error(key, "missing required key")
    local = values["address"] == LOCAL_ADDRESS
    if local:
        for key in sorted(SSH_ONLY_KEYS & values.keys()):
            raise where.error(key, f"has no effect on a local host (address = {LOCAL_ADDRESS!r})")
        defaults = {k: v for k, v in defaults.items() if k not in SSH_ONLY_KEYS}
    merged = {**defaults, **values}
    merged.setdefault("python", sys.executable if local else DEFAULT_PYTHON)
    python_from = "host" if "python" in values else "defaults" if "python" in defaults \
        else "builtin"
    return Host(**merged, local=local, python_from=python_from)


def _parse_hosts(value: object, defaults: Mapping[str, Any], file: str, base: Path) -> list[Host]:
    top = _Where(file)
    if value is None:
        raise top.error("host", "no hosts: add at least one [[host]] table")
    if not isinstance(value, list):
        raise top.error("host", f"expected an array of tables ([[host]]), found {_found(value)}")
    if not value:
        raise top.error("host", "no hosts: the host list is empty")
    hosts: list[Host] = []
    first_index: dict[str, int] = {}
    for index, table in enumerate(value, start=1):
        host = _parse_host(index, table, defaults, file, base)
        if host.name in first_index:
            where = _Where(file, f"host {host.name!r} (#{index})")
            raise where.error(
                "name", f"duplicate name, already used by host #{first_index[host.name]}"
            )
        first_index[host.name] = index
        hosts.append(host)
    return hosts


def _parse_shuffle(value: object, file: str) -> Shuffle:
    if value == DIRECT or value == RELAY:
        return value
    expected = " or ".join(repr(m) for m in SHUFFLE_MODES)
    raise _Where(file).error("shuffle", f"expected {expected}, found {_found(value)}")


def load_hosts(path: str | os.PathLike[str]) -> Cluster:
    """Parse a hosts file into a :class:`Cluster`; any problem raises a one-line ConfigError.

    ``identity``/``known_hosts`` expand ``~``; relative paths resolve against the file's directory.
    """
    source = Path(path)
    file = str(source)
    data = _read_toml(source, _Where(file))
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _Where(file).error(key, f"unknown top-level key{_suggest(key, TOP_LEVEL_KEYS)}")
    base = source.absolute().parent
    defaults = _parse_defaults(data.get("defaults", {}), file, base)
    hosts = _parse_hosts(data.get("host"), defaults, file, base)
    shuffle = _parse_shuffle(data.get("shuffle", DEFAULT_SHUFFLE), file)
    return Cluster(hosts=tuple(hosts), source=source.absolute(), shuffle=shuffle)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_host_name() -> str:
    """This machine's host name, made a valid host name for hosts.toml."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()).lstrip("-.")
    return name or "localhost"


def embedded_default() -> Cluster:
    """The cluster used without a hosts file: this machine, no SSH, all available cores."""
    host = Host(
        name=local_host_name(),
        address=LOCAL_ADDRESS,
        python=sys.executable,
        cores=_available_cores(),
        local=True,
    )
    return Cluster(hosts=(host,), source=None, shuffle=DEFAULT_SHUFFLE)


# --- SSH ---------------------------------------------------------------------------------------


def resolve_ssh(host: Host, ssh_config_path: str | os.PathLike[str] | None = None) -> SSHTarget:
    """Resolve a remote host the way OpenSSH would, through ``paramiko.SSHConfig``.

    ``ssh_config_path`` defaults to ``~/.ssh/config`` (used if present); an explicit path must
    exist. Honours Host aliases, HostName, User, Port, IdentityFile, ProxyJump,
    UserKnownHostsFile and ConnectTimeout. Explicit hosts.toml values win over the ssh config,
    which wins over the defaults (the current user, port 22, ``~/.ssh/known_hosts``, a 10 s
    connect timeout). ``Include`` is not followed (paramiko does not); ``ProxyCommand`` is
    refused (use ProxyJump).
    """
    if host.local:
        raise ValueError(f"host {host.name!r} is local: it has no SSH target")
    config, label = load_ssh_config(ssh_config_path)
    resolver = Resolver(config, label, f"host {host.name!r}")
    return resolver.resolve(
        host.address,
        user=host.user,
        port=host.port,
        identity=host.identity,
        known_hosts=host.known_hosts,
        connect_timeout=host.connect_timeout,
    )
