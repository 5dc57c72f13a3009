"""Human units, one system everywhere (progress bar, log lines, summary, show, report):
sizes in binary units (``1.5 MiB``), durations as ``850 ms``/``12.3 s``/``4m 05s``."""

from __future__ import annotations

import time


def fmt_bytes(n: float | None) -> str:
    """``1.5 MiB``; ``-`` for unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def fmt_rate(bytes_per_second: float | None) -> str:
    return "-" if bytes_per_second is None else fmt_bytes(bytes_per_second) + "/s"


def fmt_duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 03m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def fmt_time(epoch: float | None) -> str:
    """Local wall-clock time with its UTC offset."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(epoch))
