"""Connecting to a host with paramiko/fabric: built from the resolved SSHTarget only, host keys checked.

:func:`connect` opens a fabric ``Connection`` that never reads an ssh config (the
:class:`~mapred.cluster.ssh.config.SSHTarget` is the whole truth), trusts only keys in the
target's known_hosts files (:mod:`mapred.cluster.ssh.knownhosts` reads and writes them), and
turns every failure into one of mapred's errors naming the host: a refused or changed key and
failed authentication are fatal (exit 2), an unreachable host is :class:`HostUnusable` (within
the target's ``connect_timeout``).
:func:`exec_command` runs one command on a channel.

Never a prompt: a passphrase-protected identity is used only through an ssh-agent that holds it
(as OpenSSH does with ``IdentitiesOnly``); without one the connection fails at once with
:class:`KeyLocked`, naming the key file.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import logging
import os
import shlex
import threading
from pathlib import Path
from typing import Any

from mapred.cluster import diagnose
from mapred.cluster.ssh import knownhosts
from mapred.cluster.ssh.config import SERVER_ALIVE_INTERVAL, SSHTarget
from mapred.errors import ConfigError, JobError, NoHostsError

log = logging.getLogger("mapred")

REQUEST_TIMEOUT = 30.0  # seconds: a command or agent request that waits for its reply


class HostKeyError(ConfigError):
    """A host key is unknown or changed: refused before anything is sent (exit 2)."""


class KeyLocked(ConfigError):
    """The identity is passphrase-protected and no agent holds it: the same on every host that
    uses it (``cause`` names the key without the host), exit 2."""

    def __init__(self, host: str, cause: str) -> None:
        super().__init__(f"host {host}: {cause}")
        self.host, self.cause = host, cause


class HostUnusable(NoHostsError):
    """A host cannot be used: unreachable, wrong versions, agent failed (exit 3 if none is left)."""


class DiskFull(HostUnusable):
    """The host's workdir has no space left: it cannot even start the run there."""

    def __init__(self, host: str, workdir: str) -> None:
        super().__init__(diagnose.disk_full_line({host: workdir}, every=False))
        self.host, self.workdir = host, workdir


class RemoteError(JobError):
    """A remote operation failed: names the host, the command, its exit code and stderr tail."""

    def __init__(self, host: str, command: str, exit_code: int | None, stderr: str = "",
                 why: str = "") -> None:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        status = f"exited {exit_code}" if exit_code is not None else (why or "failed")
        message = f"host {host}: {command} {status}"
        if tail:
            message += ": " + " | ".join(tail.splitlines())
        super().__init__(message, detail=None)
        self.host, self.command, self.stderr = host, command, stderr
        self.status = exit_code


# --- connecting: fabric from the SSHTarget only, known_hosts enforced -------------------------


def fingerprint(key: Any) -> str:
    """OpenSSH's form: ``SHA256:<base64, no padding>`` of the public key blob."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


_KNOWN_HOSTS_LOCK = threading.Lock()


class KnownHostsPolicy:
    """Unknown key: refuse with its fingerprint, or (accept-new) remember it in known_hosts.

    A revoked key is refused always; accept-new is refused when the known_hosts file could not
    keep the key (:func:`~mapred.cluster.ssh.knownhosts.accept_new_refusal`).
    """

    def __init__(self, target: SSHTarget, label: str, accept_new: bool) -> None:
        self.target, self.label, self.accept_new = target, label, accept_new
        self.known = knownhosts.read(target.known_hosts_files)

    def load(self, client: Any) -> None:
        keys = client.get_host_keys()
        for hostname, entry in self.known.keys.items():
            for key_type, key in entry.items():
                keys.add(hostname, key_type, key)

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        what = f"{key.get_name()} key {fingerprint(key)}"
        revoked = self.known.revocation(key)
        if revoked is not None:
            raise HostKeyError(f"host {self.label}: the host key of {hostname} ({what}) is "
                               f"REVOKED ({revoked}); refusing to connect")
        files = self.target.known_hosts_files
        refusal = knownhosts.accept_new_refusal(files) if self.accept_new else None
        if not self.accept_new or refusal is not None:
            where = ", ".join(files) or "no known_hosts file configured"
            cas = ""
            if self.known.authorities:
                cas = (f" ({self.known.authorities[0]} trusts host certificates, which mapred "
                       "does not verify: add the host's own key)")
            fix = ("and add the key, or run again with --accept-new-host-keys" if refusal is None
                   else f"and add the key: --accept-new-host-keys refused, {refusal}")
            raise HostKeyError(
                f"host {self.label}: unknown host key for {hostname}: {what} is not in "
                f"known_hosts ({where}){cas}; refusing to connect. Check that fingerprint on the "
                f"host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) {fix}")
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _KNOWN_HOSTS_LOCK:
            Path(files[0]).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(files[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("host %s: accepted new host key %s for %s (added to %s)", self.label, what,
                    hostname, files[0])


def build_connection(target: SSHTarget, label: str, *, accept_new: bool = False,
                     timeout: float | None = None) -> Any:
    """An unopened fabric Connection to ``target``: no ssh config read, keys from the target."""
    import paramiko
    from fabric import Config, Connection

    timeout = target.connect_timeout if timeout is None else timeout
    gateway = None
    if target.proxy_jump is not None:
        jump = target.proxy_jump
        gateway = build_connection(jump, f"{label} (via jump host {jump.hostname})",
                                   accept_new=accept_new)
    ids = list(target.identity_files)
    kwargs: dict[str, Any] = {"look_for_keys": not ids, "allow_agent": not ids,
                              "banner_timeout": timeout, "auth_timeout": timeout,
                              "channel_timeout": timeout}
    if ids:
        kwargs["key_filename"] = ids
        held = _agent_key(ids)
        if held is not None:  # the agent's copy first, as OpenSSH does (IdentitiesOnly)
            kwargs["pkey"] = held
    config = Config(ssh_config=paramiko.SSHConfig(), lazy=True,
                    overrides={"load_ssh_configs": False})
    conn = Connection(target.hostname, user=target.user, port=target.port, config=config,
                      gateway=gateway, forward_agent=False, connect_timeout=timeout,
                      connect_kwargs=kwargs)
    policy = KnownHostsPolicy(target, label, accept_new)
    policy.load(conn.client)
    conn.client.set_missing_host_key_policy(policy)  # fabric set AutoAddPolicy: never that
    return conn


def connect(target: SSHTarget, label: str, *, accept_new: bool = False,
            timeout: float | None = None) -> Any:
    """An open, host-key-verified fabric Connection; errors name the host and the cause.

    ``timeout`` (default: the target's ``connect_timeout``) bounds the TCP connect, the SSH
    banner and the authentication each."""
    import paramiko

    timeout = target.connect_timeout if timeout is None else timeout
    conn = build_connection(target, label, accept_new=accept_new, timeout=timeout)
    where = f"host {label} ({target.user}@{target.hostname}:{target.port})"
    try:
        conn.open()
    except HostKeyError:
        conn.close()
        raise
    except paramiko.BadHostKeyException as e:
        conn.close()
        entry = target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"
        fix = " ".join(shlex.quote(w) for w in ["ssh-keygen", *(
            ["-f", target.known_hosts_files[0]] if target.known_hosts_files else []), "-R", entry])
        raise HostKeyError(
            f"{where}: host key CHANGED: it presents {e.key.get_name()} key "
            f"{fingerprint(e.key)}, known_hosts has {fingerprint(e.expected_key)}; refusing to "
            "connect (someone may be intercepting the connection; if the host was reinstalled, "
            f"remove the old key with {fix})") from None
    except paramiko.AuthenticationException as e:
        conn.close()
        locked = locked_keys(target.identity_files)
        if locked and isinstance(e, paramiko.PasswordRequiredException) and \
                _agent_key(list(target.identity_files)) is None:
            raise KeyLocked(label, _locked_cause(locked)) from None
        keys = ", ".join(target.identity_files) or "agent and default keys"
        raise ConfigError(f"{where}: authentication failed ({e}); keys tried: {keys}") from None
    except TimeoutError:
        conn.close()
        raise HostUnusable(f"{where}: cannot connect: nothing answered within {timeout:g}s "
                           "(connect_timeout)") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        conn.close()
        raise HostUnusable(f"{where}: cannot connect: {_reason(e)}") from None
    conn.transport.set_keepalive(SERVER_ALIVE_INTERVAL)
    return conn


def _reason(e: BaseException) -> str:
    import paramiko

    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError) and e.errors:
        causes = sorted({err.strerror or str(err) for err in e.errors.values()})
        why = "; ".join(causes)
        if any(getattr(err, "errno", None) in UNREACHABLE for err in e.errors.values()):
            why += " (nothing answers at that address: is it right, and is the host up?)"
        elif any(isinstance(err, ConnectionRefusedError) for err in e.errors.values()):
            why += " (the host is up, but nothing listens on that port: is sshd running?)"
        return why
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)


# --- passphrase-protected keys: an agent's copy, or a clear refusal ---------------------------


def locked_keys(files: tuple[str, ...] | list[str]) -> list[str]:
    """Those of ``files`` that are passphrase-protected (cannot be loaded without one)."""
    import paramiko

    out = []
    for path in files:
        try:
            paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            out.append(path)
        except TypeError as e:  # paramiko >= 3.2: "Key is password-protected, but ..."
            if "password" in str(e):
                out.append(path)
        except Exception:  # noqa: BLE001,S112 - missing or unreadable: not this problem
            continue
    return out


def _locked_cause(locked: list[str]) -> str:
    key = locked[0]
    agent = ("no ssh-agent holds it (SSH_AUTH_SOCK is not set)" if not os.environ.get(
        "SSH_AUTH_SOCK") else "the ssh-agent at SSH_AUTH_SOCK does not hold it")
    return (f"the key {key} is passphrase-protected and {agent}; mapred never asks for a "
            f"passphrase: add it to an agent (ssh-add {key}) or use a key without one")


def _agent_key(identity_files: list[str]) -> Any:
    """The agent's key for the first identity file whose public key (``FILE.pub``) it holds."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return None
    import paramiko

    wanted = []
    for path in identity_files:
        try:
            wanted.append(base64.b64decode(Path(path + ".pub").read_text().split()[1]))
        except (OSError, IndexError, ValueError):
            continue
    if not wanted:
        return None
    try:
        agent = paramiko.Agent()
        keys = {k.asbytes(): k for k in agent.get_keys()}
    except (paramiko.SSHException, OSError):
        return None
    return next((keys[blob] for blob in wanted if blob in keys), None)


def exec_command(conn: Any, label: str, command: str, *, stdin: bytes = b"",
                 timeout: float = REQUEST_TIMEOUT, check: bool = True) -> tuple[int, bytes, bytes]:
    """Run ``command`` (already quoted) on a channel of ``conn``: (exit code, stdout, stderr)."""
    chan = conn.transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            chunk = chan.recv(1 << 16)
            if not chunk:
                break
            out += chunk
        while True:
            chunk = chan.recv_stderr(1 << 16)
            if not chunk:
                break
            err += chunk
        code = chan.recv_exit_status()
    except TimeoutError:
        raise RemoteError(label, _short(command), None,
                          why=f"timed out after {timeout:g}s") from None
    finally:
        chan.close()
    if check and code != 0:
        raise RemoteError(label, _short(command), code, err.decode("utf-8", "replace"))
    return code, bytes(out), bytes(err)


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."
