"""Full fine-tuning: every weight is trained."""

from __future__ import annotations

from typing import Any


def apply(model: Any, cfg: Any, ctx: Any = None) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model
