"""The one line for a missing python and for full disks (mapred.cluster.diagnose), and the reasons a
connection fails (mapred.cluster.ssh.connect)."""

from __future__ import annotations

import errno

import paramiko
import pytest

from mapred.cluster import diagnose
from mapred.cluster.ssh.connect import _reason


@pytest.mark.parametrize(("status", "stderr", "why"), [
    (127, "bash: line 1: /nonexistent/python3: No such file or directory\n",
     "No such file or directory"),
    (127, "sh: 1: exec: /opt/py: not found\n", "not found"),
    (127, "bash: line 1: python9: command not found\n", "command not found"),
    (126, "bash: line 1: /srv/py: Permission denied\n", "Permission denied"),
    (127, "", "not found"),
    (126, "", "not executable"),
])
def test_a_python_that_cannot_run_is_one_line_naming_host_and_path(
        status: int, stderr: str, why: str) -> None:
    line = diagnose.missing_python("h1", "/opt/py", status, stderr)
    assert line == (f"host h1: python /opt/py cannot run there: {why} (the hosts file's "
                    "'python'; `mapred hosts setup` installs one and prints the line to use)")


@pytest.mark.parametrize("status", [0, 1, 2, 255, None])
def test_other_failures_are_not_a_missing_python(status: int | None) -> None:
    assert diagnose.missing_python("h1", "python3", status, "ModuleNotFoundError") is None


@pytest.mark.parametrize(("text", "full"), [
    ("OSError: [Errno 28] No space left on device", True),
    ('rsync: [receiver] write failed on "/srv/x": No space left on device (28)', True),
    ("OSError: [Errno 122] Disk quota exceeded", True),
    ("ValueError: cannot map this record", False),
    ("", False),
    (None, False),
])
def test_disk_full_is_recognised_in_any_report(text: str | None, full: bool) -> None:
    assert diagnose.disk_full(text) is full


def test_the_disk_full_line_names_hosts_and_their_workdirs() -> None:
    assert diagnose.disk_full_line({"h2": "/srv/m", "h1": "/srv/m"}, every=True) == (
        "no space left on device on every host: h1, h2 (workdir /srv/m); free space there, or "
        "set workdir in the hosts file to a larger disk")
    line = diagnose.disk_full_line({"a": "/x", "b": "/y"}, every=False)
    assert line.startswith("no space left on device on hosts: a (workdir /x); b (workdir /y);")
    assert diagnose.disk_full_line({"a": "/x"}, every=False).startswith(
        "no space left on device on host: a (workdir /x);")


def test_an_unreachable_address_says_nothing_answers() -> None:
    unreachable = paramiko.ssh_exception.NoValidConnectionsError(
        {("198.18.0.99", 22): OSError(errno.EHOSTUNREACH, "No route to host")})
    assert _reason(unreachable) == ("No route to host (nothing answers at that address: is it "
                                    "right, and is the host up?)")
    refused = paramiko.ssh_exception.NoValidConnectionsError(
        {("198.18.0.99", 22): ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")})
    assert _reason(refused) == ("Connection refused (the host is up, but nothing listens on "
                                "that port: is sshd running?)")


@pytest.mark.needs("ssh-keygen")
def test_a_passphrase_protected_key_is_named_and_never_prompted_for(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from mapred.cluster.ssh.connect import _agent_key, _locked_cause, locked_keys

    for name, phrase in (("open", ""), ("locked", "secret")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", phrase, "-f",
                        tmp_path / name], check=True)
    files = [str(tmp_path / "open"), str(tmp_path / "locked"), str(tmp_path / "missing")]
    assert locked_keys(files) == [str(tmp_path / "locked")]
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert _agent_key(files) is None  # no agent: nothing to ask, nobody to prompt
    assert _locked_cause([files[1]]) == (
        f"the key {files[1]} is passphrase-protected and no ssh-agent holds it (SSH_AUTH_SOCK is "
        f"not set); mapred never asks for a passphrase: add it to an agent (ssh-add {files[1]}) "
        "or use a key without one")
