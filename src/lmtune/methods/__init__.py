"""Fine-tuning methods: one small module per method, registered by name.

Each method's ``apply(model, cfg)`` returns the model to train.  Adding a method
means adding a module and one line in ``METHODS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmtune.methods import full, lora

METHODS: dict[str, Callable[[Any, Any], Any]] = {
    "full": full.apply,
    "lora": lora.apply,
}


def apply_method(model: Any, cfg: Any) -> Any:
    """Apply ``cfg.method`` to ``model`` (the name was validated when the config loaded)."""
    return METHODS[cfg.method](model, cfg)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
