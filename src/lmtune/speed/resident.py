"""What the operating system charges this process, read from ``/proc``.

``VmRSS`` is the figure ``bench/speed.py`` reports as peak RSS (``wait4``), so the planner's predictions
(``lmtune.plan``) and its measurements compare like for like; ``training.trim_memory`` (``allocator.py``)
watches the same figure between steps.
"""

from __future__ import annotations


def rss_bytes() -> int:
    """This process's resident set size now."""
    return _kib_field("/proc/self/status", "VmRSS:") * 1024


def available_bytes() -> int:
    """Memory the machine can still give (``MemAvailable``): the default ``--memory-budget``."""
    return _kib_field("/proc/meminfo", "MemAvailable:") * 1024


def _kib_field(path: str, name: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Start a new peak-RSS measurement (``VmHWM``, reset through ``/proc/self/clear_refs``); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The highest resident memory since the process started or since `reset_peak`."""
    return _kib_field("/proc/self/status", "VmHWM:") * 1024
