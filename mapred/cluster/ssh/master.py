"""The OpenSSH master connection of an SSH host: rsync and ssh multiplex over it."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time

from mapred.cluster.hosts import ssh_command_args
from mapred.cluster.ssh.state import TransportState

log = logging.getLogger("mapred")


class MasterMixin(TransportState):
    """The OpenSSH master connection of an SSH host: rsync and ssh multiplex over it."""

    def _ssh_args(self) -> list[str]:
        return ssh_command_args(self.target, accept_new_host_keys=self.accept_new)

    @property
    def _ctl_opt(self) -> str:
        return self._ctl.replace("%", "%%")

    def _mux_options(self) -> list[str]:
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={self._ctl_opt}"]

    def _rsh(self) -> str:
        return " ".join(shlex.quote(a) for a in ["ssh", *self._ssh_args(), *self._mux_options()])

    def _start_master(self) -> subprocess.Popen[bytes]:
        """The OpenSSH master rsync multiplexes over, tied to this process: a shell holds it
        and kills it when its stdin (our pipe) closes, so it cannot outlive us, even kill -9."""
        argv = [*self._ssh_args(), "-o", "ControlMaster=yes", "-o", f"ControlPath={self._ctl_opt}",
                "-o", "ControlPersist=no", "-N", self.target.hostname]
        script = 'ssh "$@" </dev/null & trap "kill $! 2>/dev/null" EXIT HUP TERM; read _'
        with open(self._tmp / "master.log", "wb") as err:
            return subprocess.Popen(["sh", "-c", script, "mapred-ssh-master", *argv],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err)

    def _wait_master(self) -> None:
        """Before the first rsync: the master is up (or failed, and rsync connects alone)."""
        with self._master_lock:
            if self._master is None or self._master_checked:
                return
            self._master_checked = True
            deadline = time.monotonic() + self.connect_timeout + 5
            while not os.path.exists(self._ctl) and time.monotonic() < deadline:
                time.sleep(0.01)
        if not os.path.exists(self._ctl):  # not fatal: rsync then connects on its own
            why = (self._tmp / "master.log").read_text(errors="replace").strip()[-300:]
            log.warning("host %s: no shared OpenSSH connection for rsync (%s)", self.name,
                        why or "not up in time")

    def _stop_master(self) -> None:
        master = self._master
        if master is None:
            return
        try:
            assert master.stdin is not None
            master.stdin.close()
            master.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            master.kill()
