"""Memory facts for the planner: this process's resident memory, and the named parts of a run's peak.

Weights, gradients and optimizer state are counted from the model's parameters; activations, logits,
evaluation and generation are measured on the real model and data by ``probe.py``. Resident memory is
what the operating system charges the process (``VmRSS``), the same figure ``bench/speed.py`` reports
as peak RSS (``wait4``), so a prediction and a measurement compare like for like.
"""

from __future__ import annotations

from typing import Any

# the /proc readers live below the planner, in lmtune.speed: training.trim_memory reads resident memory too
from lmtune.speed.resident import available_bytes, peak_rss_bytes, reset_peak, rss_bytes  # noqa: F401 (re-exported)

MB = 1 << 20


def parameter_bytes(model: Any, optimizer: str) -> dict[str, int]:
    """Weights as loaded; float32 gradients and optimizer state of the trainable parameters."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = 0 if "sgd" in optimizer else 1 if "adafactor" in optimizer or "lion" in optimizer else 2
    return {"weights": weights, "gradients": 4 * trainable, "optimizer": 4 * states * trainable}
