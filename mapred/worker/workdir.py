"""Whether a host's workdir is safe to keep job code and data in (standard library only).

The agent runs job modules and reads shards from its workdir, so a workdir another user can
change lets that user plant code. OpenSSH's ``StrictModes`` reasoning, applied to the workdir:
it and its subdirectories must be real directories (not symlinks) owned by this user and not
writable by group or others; every directory above it must belong to this user or root and be
writable by others only when sticky (``/tmp``). And it must be writable (or creatable) by us.

``mapred hosts check`` sends this module's source with its probe, so the check before a run and
the agent's own check are the same code.
"""

from __future__ import annotations

import os
import stat

KEEP_DIR = "keep"  # WORKDIR/keep/RUN_ID: committed map outputs of a run whose coordinator vanished
WORKDIR_SUBDIRS = ("runs", "cache", "jobs", KEEP_DIR)  # checked like the workdir itself


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _unsafe_dir(path: str, st: os.stat_result, me: int) -> str | None:
    if st.st_uid != me:
        return f"{path} belongs to {_owner(st.st_uid)}, not to {_owner(me)}"
    if st.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others", 0o022: "group and others"}[st.st_mode & 0o022]
        return (f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); "
                "chmod go-w it")
    return None


def problem(workdir: str, subdirs: tuple[str, ...] = ()) -> str | None:
    """Why ``workdir`` (absolute) and its ``subdirs`` must not be used, or None."""
    me = os.geteuid()
    path = os.path.abspath(workdir)
    for sub in ("", *subdirs):
        p = os.path.join(path, sub) if sub else path
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            return f"{p} cannot be examined: {e.strerror or e}"
        if stat.S_ISLNK(st.st_mode):
            return f"{p} is a symbolic link; use the real path"
        if not stat.S_ISDIR(st.st_mode):
            return f"{p} is not a directory"
        why = _unsafe_dir(p, st, me)
        if why is not None:
            return why
    parent = os.path.dirname(path)
    existing = path if os.path.isdir(path) else None
    while True:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            parent = os.path.dirname(parent)
            continue
        except OSError as e:
            return f"{parent} cannot be examined: {e.strerror or e}"
        if existing is None:
            existing = parent
        if st.st_uid not in (me, 0):
            return f"{parent} (above the workdir) belongs to {_owner(st.st_uid)}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{parent} (above the workdir) is writable by others and not sticky "
                    f"(mode {stat.S_IMODE(st.st_mode):04o})")
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        what = path if existing == path else f"{existing}, where {path} would be created,"
        return f"{what} is not writable"
    return None
