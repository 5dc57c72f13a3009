"""Names both sides share (standard library only): the shuffle modes, the umask handed to workers.

``direct``: reducers fetch map outputs from the mapper hosts' rsync daemons themselves; ``relay``:
through SSH port forwards bridged by the coordinator. Workers get the coordinator's umask in
``MAPRED_UMASK`` (part files follow it; scratch files stay private).
"""

from __future__ import annotations

import os
from typing import Final, Literal

DIRECT: Final = "direct"
RELAY: Final = "relay"
SHUFFLE_MODES = (DIRECT, RELAY)
DEFAULT_SHUFFLE: Final = DIRECT
Shuffle = Literal["direct", "relay"]

UMASK_ENV = "MAPRED_UMASK"


def current_umask() -> int:
    """This process's umask (set and restored: call it from one thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_env() -> str:
    """The value of ``MAPRED_UMASK`` for workers: this process's umask, in octal."""
    return oct(current_umask())


def umask_from_env(default: int = 0o022) -> int:
    """The coordinator's umask, as a worker reads it from ``MAPRED_UMASK``."""
    return int(os.environ.get(UMASK_ENV, oct(default)), 8)
