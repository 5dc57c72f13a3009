"""``~/.ssh/config`` -> :class:`SSHTarget`, and the OpenSSH argv that reaches the same target.

The SSHTarget is the single source of truth for both transports: the paramiko/fabric path connects
with exactly its fields (and must not load ssh configs again), and :func:`ssh_command_args` /
:func:`rsync_rsh` hand OpenSSH the same fields with ``-F /dev/null``, so ``ssh`` never re-reads a
config file that could resolve the host differently (another ``Host`` block matching the resolved
HostName, an ``Include`` paramiko does not follow, ``/etc/ssh/ssh_config``...).

ProxyJump becomes an explicit ``ProxyCommand`` running ``ssh -W`` with the jump host's own full
option set: ``-J`` passes only ``-l``/``-p``/``-F`` to the jump connection, not BatchMode,
StrictHostKeyChecking, the identity or the known_hosts files, so that hop could prompt or trust an
unknown host key.

Callers normally use :func:`mapred.cluster.hosts.resolve_ssh`; paramiko is imported lazily here.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapred.cluster.ssh.knownhosts import accept_new_refusal
from mapred.errors import ConfigError, UsageError
from mapred.limits import CONNECT_TIMEOUT, SERVER_ALIVE_COUNT_MAX, SERVER_ALIVE_INTERVAL

# --- every SSH default, in one place ---------------------------------------------------------

DEFAULT_SSH_PORT = 22
DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
MAX_JUMP_HOPS = 8


CLIENT_TOOLS = {"ssh": "openssh-client", "rsync": "rsync"}  # program -> its Debian package


def require_client_tools(source: object) -> None:
    """UsageError (exit 2) naming the programs missing on this machine that SSH hosts need.

    ``ssh`` carries every byte rsync sends and ``rsync`` ships shards, job modules and results;
    checked before any connection so that the error names the program, not a later symptom.
    """
    absent = [tool for tool in CLIENT_TOOLS if shutil.which(tool) is None]
    if absent:
        pkgs = " ".join(sorted({CLIENT_TOOLS[t] for t in absent}))
        raise UsageError(f"{source} names SSH hosts, but {' and '.join(absent)} "
                         f"{'is' if len(absent) == 1 else 'are'} not installed on this machine "
                         f"(Debian: apt-get install {pkgs})")


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach a host over SSH, fully resolved (absolute paths, no aliases).

    ``identity_files`` empty means "agent and OpenSSH's default keys"; non-empty means "these keys
    only" (IdentitiesOnly). ``known_hosts_files`` empty means no host key can be trusted.
    ``proxy_jump`` is the last hop before this host, itself fully resolved. ``connect_timeout``
    bounds reaching it on both paths (paramiko's connect, banner and auth; OpenSSH's
    ConnectTimeout).
    """

    hostname: str
    user: str
    port: int = DEFAULT_SSH_PORT
    identity_files: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    proxy_jump: SSHTarget | None = None
    connect_timeout: float = CONNECT_TIMEOUT


# --- resolution ------------------------------------------------------------------------------


def local_user() -> str:
    """The local login name, as OpenSSH finds it (the passwd entry, not $USER)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        import getpass

        return getpass.getuser()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_ssh_config(path: str | os.PathLike[str] | None) -> tuple[Any, str]:
    """(``paramiko.SSHConfig`` or None, its path for messages). Only an explicit path must exist."""
    config_path = Path(path if path is not None else DEFAULT_SSH_CONFIG).expanduser()
    label = str(config_path)
    if path is None and not config_path.is_file():
        return None, label
    import paramiko

    try:
        return paramiko.SSHConfig.from_path(label), label
    except FileNotFoundError:
        raise ConfigError(f"{label}: ssh config file not found") from None
    except OSError as e:
        raise ConfigError(
            _one_line(f"{label}: cannot read ssh config: {e.strerror or e}")
        ) from None
    except paramiko.SSHException as e:
        raise ConfigError(_one_line(f"{label}: invalid ssh config: {e}")) from None


class Resolver:
    """Resolves names through one parsed ssh config, the way OpenSSH does with that config.

    ``who`` names the hosts.toml host being resolved, for error messages.
    """

    def __init__(self, config: Any, label: str, who: str) -> None:
        self.config = config
        self.prefix = f"{label}: {who}"

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(_one_line(f"{self.prefix}: key {key!r}: {problem}"))

    def lookup(self, alias: str) -> dict[str, Any]:
        if self.config is None:
            return {}
        import paramiko

        try:
            return dict(self.config.lookup(alias))
        except paramiko.SSHException as e:
            raise self.error("Host", f"lookup of {alias!r} failed: {e}") from None

    def checked(self, key: str, value: str) -> str:
        """``value``, unless ssh would read it as an option or split it."""
        if not value or value.startswith("-") or any(c.isspace() for c in value):
            raise self.error(key, f"unusable value {value!r}")
        return value

    def timeout(self, value: str | None) -> float | None:
        if value is None:
            return None
        if not value.isdigit() or int(value) < 1:
            raise self.error("ConnectTimeout", f"expected a number of seconds, found {value!r}")
        return float(value)

    def port(self, value: str | None) -> int | None:
        if value is None:
            return None
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise self.error("Port", f"expected an integer 1..65535, found {value!r}")
        return int(value)

    def resolve(
        self,
        alias: str,
        *,
        user: str | None = None,
        port: int | None = None,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        jump: str | None = None,
        connect_timeout: float | None = None,
        depth: int = 0,
    ) -> SSHTarget:
        """Explicit arguments > ssh config for ``alias`` > defaults."""
        opts = self.lookup(alias)
        if opts.get("proxycommand", "none").lower() != "none":
            raise self.error("ProxyCommand", "not supported by mapred; use ProxyJump")
        return SSHTarget(
            hostname=self.checked("HostName", opts.get("hostname", alias)),
            user=self.checked("User", user or opts.get("user") or local_user()),
            port=port or self.port(opts.get("port")) or DEFAULT_SSH_PORT,
            identity_files=_identity_files(identity, opts),
            known_hosts_files=_known_hosts_files(known_hosts, opts),
            proxy_jump=self.jump(jump if jump is not None else opts.get("proxyjump"), depth,
                                 connect_timeout),
            connect_timeout=connect_timeout or self.timeout(opts.get("connecttimeout"))
            or CONNECT_TIMEOUT,
        )

    def jump(self, spec: str | None, depth: int,
             connect_timeout: float | None = None) -> SSHTarget | None:
        """The last hop of a ProxyJump list (``[user@]host[:port]``, comma-separated), resolved.

        Like OpenSSH, the last hop is reached through the earlier ones, or through its own
        ProxyJump when it is the only one. A hosts.toml connect_timeout applies to every hop.
        """
        if spec is None or spec.strip().lower() == "none":
            return None
        if depth >= MAX_JUMP_HOPS:
            raise self.error("ProxyJump", f"more than {MAX_JUMP_HOPS} hops (a loop?)")
        earlier, _, last = spec.strip().rpartition(",")
        user, host, port = split_jump(last)
        return self.resolve(
            self.checked("ProxyJump", host),
            user=user and self.checked("ProxyJump", user),
            port=self.port(port),
            jump=earlier or None,
            connect_timeout=connect_timeout,
            depth=depth + 1,
        )


def split_jump(hop: str) -> tuple[str | None, str, str | None]:
    """``[ssh://][user@]host[:port]`` (host may be ``[v6]``) -> (user, host, port)."""
    hop = hop.strip().removeprefix("ssh://")
    user, _, rest = hop.rpartition("@")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":") or None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, None
    return user or None, host, port


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _identity_files(explicit: Path | None, opts: Mapping[str, Any]) -> tuple[str, ...]:
    if explicit is not None:
        return (str(explicit),)
    files = opts.get("identityfile", [])
    return tuple(_absolute(f) for f in files if f.lower() != "none")


def _known_hosts_files(explicit: Path | None, opts: Mapping[str, Any]) -> tuple[str, ...]:
    if explicit is not None:
        return (str(explicit),)
    configured = opts.get("userknownhostsfile")
    if configured is None:
        return (_absolute(DEFAULT_KNOWN_HOSTS),)
    return tuple(_absolute(f) for f in shlex.split(configured) if f.lower() != "none")


# --- OpenSSH argv ----------------------------------------------------------------------------

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./@+=:,~-")


def _ssh_literal(text: str) -> str:
    """Escape OpenSSH's %-tokens so a value is taken literally (IdentityFile, known hosts...)."""
    return text.replace("%", "%%")


def _ssh_config_word(text: str) -> str:
    """One word of an ssh option value (``-o Key=w1 w2``), quoted for OpenSSH's argv_split."""
    text = _ssh_literal(text)
    if text and set(text) <= _PLAIN:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _proxy_command(jump: SSHTarget, accept_new_host_keys: bool) -> str:
    """``ssh <jump's own options> -W [%h]:%p <jump>``, quoted for the shell ssh runs it with."""
    inner = ssh_command_args(jump, accept_new_host_keys=accept_new_host_keys)
    # The outer ssh expands %-tokens in this string once: escape the inner ones, keep %h/%p.
    words = ["ssh", *map(_ssh_literal, inner), "-W", "[%h]:%p", _ssh_literal(jump.hostname)]
    return " ".join(shlex.quote(w) for w in words)


def ssh_command_args(target: SSHTarget, *, accept_new_host_keys: bool = False) -> list[str]:
    """OpenSSH client options reaching ``target`` exactly as the paramiko path does.

    Append ``target.hostname`` (and a command) for a full ``ssh`` argv. Never prompts (BatchMode),
    never trusts an unknown host key unless ``accept_new_host_keys``, never forwards the agent.
    """
    known = " ".join(_ssh_config_word(f) for f in target.known_hosts_files) or os.devnull
    # accept-new without a real file to remember keys in would accept any key, every time.
    accept_new = accept_new_host_keys and accept_new_refusal(target.known_hosts_files) is None
    args = [
        "-F", os.devnull,  # the ssh config was applied by the resolver already
        "-o", "BatchMode=yes",
        "-o", f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}",
        "-o", f"UserKnownHostsFile={known}",
        "-o", f"GlobalKnownHostsFile={os.devnull}",  # paramiko does not read the global file
        "-o", "UpdateHostKeys=no",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
        "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
        "-o", f"ConnectTimeout={math.ceil(target.connect_timeout)}",  # whole seconds only
    ]  # fmt: skip
    if target.identity_files:
        args += ["-o", "IdentitiesOnly=yes"]
        # Not -i: ssh drops a -i file it cannot stat (falling back to the default keys, unlike
        # paramiko) and cannot take a '%' in it; an IdentityFile option has neither problem.
        for identity in target.identity_files:
            args += ["-o", f"IdentityFile={_ssh_config_word(identity)}"]
    if target.proxy_jump is not None:
        args += ["-o", f"ProxyCommand={_proxy_command(target.proxy_jump, accept_new_host_keys)}"]
    return [*args, "-p", str(target.port), "-l", target.user]


def rsync_rsh(target: SSHTarget, *, ssh: str = "ssh", accept_new_host_keys: bool = False) -> str:
    """The ``rsync -e`` string: ``ssh`` plus :func:`ssh_command_args`, each piece shlex-quoted.

    rsync splits this string on spaces honouring single and double quotes (no backslashes),
    which is exactly the quoting ``shlex.quote`` produces.
    """
    args = ssh_command_args(target, accept_new_host_keys=accept_new_host_keys)
    return " ".join(shlex.quote(a) for a in [ssh, *args])


def rsync_remote(target: SSHTarget, path: str) -> str:
    """``host:path`` for an rsync command line (an IPv6 address in brackets)."""
    host = f"[{target.hostname}]" if ":" in target.hostname else target.hostname
    return f"{host}:{path}"
