"""One exception tree for mapred; the CLI maps each class to an exit code.

    MapredError                      exit_code 1   (base; never raised bare)
    ├── UsageError                   exit_code 2   bad command line, missing corpus, existing output
    │   ├── ConfigError              exit_code 2   malformed hosts file or parameter
    │   └── JobLoadError             exit_code 2   job module: syntax error, missing function, import raised
    ├── JobError                     exit_code 1   the job failed while running
    │   └── TaskError                exit_code 1   one task failed for good: host, shard, user traceback
    ├── NoHostsError                 exit_code 3   no usable host left
    ├── LockedError                  exit_code 75  another run holds the output lock (EX_TEMPFAIL)
    └── Interrupted                  exit_code 130 SIGINT (143 for SIGTERM)

Messages are one line naming the thing at fault; `detail` carries extra lines (a user's traceback)
that the CLI prints below the message.
"""

from __future__ import annotations


class MapredError(Exception):
    """Base of every error mapred reports to the user."""

    exit_code = 1

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class UsageError(MapredError):
    """The command line or its inputs are wrong (missing corpus, existing output...)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or parameter is malformed."""


class JobLoadError(UsageError):
    """The job module cannot be loaded or does not follow the job contract."""


class JobError(MapredError):
    """The job failed while running."""


class TaskError(JobError):
    """A task failed on every allowed attempt; carries where and why."""

    def __init__(
        self,
        message: str,
        *,
        task: str = "",
        host: str = "",
        shard: str = "",
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail)
        self.task = task
        self.host = host
        self.shard = shard


class NoHostsError(MapredError):
    """No host is usable (all unreachable or excluded)."""

    exit_code = 3


class LockedError(MapredError):
    """Another run holds the lock on the same output path."""

    exit_code = 75


class Interrupted(MapredError):
    """The run was interrupted by a signal."""

    def __init__(self, signum: int = 2) -> None:
        super().__init__("interrupted" if signum == 2 else f"terminated by signal {signum}")
        self.exit_code = 128 + signum
