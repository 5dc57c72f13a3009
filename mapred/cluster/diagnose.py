"""One clear line for the failures LAN hosts really have, from the raw text of what failed.

A remote command's exit status and stderr, or a task's error, say what went wrong in the words of
a shell, an errno or rsync; the user needs the host, the path and what to do. Each function here
recognises one such failure and words it once, so that every place that meets it (a run's
preflight, ``mapred hosts check``, a task's last failure) prints the same line:

* :func:`missing_python`: the hosts file's ``python`` does not exist or cannot run on the host
  (exit status 127 or 126 of the command that starts it);
* :func:`disk_full` / :func:`disk_full_line`: no space left on a host's disk (ENOSPC, or a quota:
  EDQUOT) in a task's error, an rsync report or the agent's start; the line names the hosts and
  their work dirs.

Coordinator side; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NOT_RUNNABLE = {127: "not found", 126: "not executable"}  # the shell's exit statuses
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (?:28|122)\]"
                        r"|\bENOSPC\b|\bEDQUOT\b")


def missing_python(host: str, python: str, status: int | None, stderr: str) -> str | None:
    """The line for a host where ``python`` cannot be started, or None if that is not it.

    ``status`` and ``stderr`` are those of a command that ran ``exec PYTHON ...`` through the
    login shell: 127 means not found, 126 not executable (bash, dash and zsh agree)."""
    if status not in _NOT_RUNNABLE:
        return None
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    why = last.rsplit(": ", 1)[-1].strip() if ": " in last else _NOT_RUNNABLE[status]
    return (f"host {host}: python {python} cannot run there: {why} (the hosts file's "
            "'python'; `mapred hosts setup` installs one and prints the line to use)")


def disk_full(error: str | None) -> bool:
    """Whether ``error`` (a task's error, an rsync or agent report) says a disk is full."""
    return bool(error) and _DISK_FULL.search(error or "") is not None


def disk_full_line(workdirs: Mapping[str, str], *, every: bool) -> str:
    """"no space left on device on every host: h1, h2 (workdir /srv/mapred); ..." for the hosts
    (name -> its workdir) whose disk filled; ``every``: they are all the run's hosts."""
    by_dir: dict[str, list[str]] = {}
    for host, workdir in workdirs.items():
        by_dir.setdefault(workdir, []).append(host)
    where = "; ".join(f"{', '.join(sorted(hosts))} (workdir {workdir})"
                      for workdir, hosts in sorted(by_dir.items()))
    scope = "every host" if every else ("host" if len(workdirs) == 1 else "hosts")
    return (f"no space left on device on {scope}: {where}; free space there, or set workdir "
            "in the hosts file to a larger disk")
