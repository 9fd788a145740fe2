"""Seconds since this process started, read from Linux's ``/proc`` (the start-up timer and the start-up trace).

Both clocks count from the boot (``/proc/uptime`` and the process's start in clock ticks), to 10 ms; the boot's
wall-clock time (``btime`` in ``/proc/stat``) is whole seconds, which put up to 1 s too many into the start-up
figure before (0.66 s on the development machine).
"""

from __future__ import annotations

import os
from pathlib import Path


def process_age_seconds() -> float | None:
    """Seconds since this process started, or None where ``/proc`` is not available (off Linux)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
