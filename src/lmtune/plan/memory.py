"""Memory facts for the planner: this process's resident memory, and the named parts of a run's peak.

Weights, gradients and optimizer state are counted from the model's parameters; activations, logits,
evaluation and generation are measured on the real model and data by ``probe.py``. Resident memory is
what the operating system charges the process (``VmRSS``), the same figure ``bench/speed.py`` reports
as peak RSS (``wait4``), so a prediction and a measurement compare like for like.
"""

from __future__ import annotations

from typing import Any

MB = 1 << 20


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


def parameter_bytes(model: Any, optimizer: str) -> dict[str, int]:
    """Weights as loaded; float32 gradients and optimizer state of the trainable parameters."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = 0 if "sgd" in optimizer else 1 if "adafactor" in optimizer or "lion" in optimizer else 2
    return {"weights": weights, "gradients": 4 * trainable, "optimizer": 4 * states * trainable}
