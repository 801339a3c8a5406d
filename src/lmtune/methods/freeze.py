"""Partial fine-tuning: only the last N transformer blocks (and named modules) are trained."""

from __future__ import annotations

from typing import Any

from lmtune.errors import ConfigError


def decoder_blocks(model: Any) -> Any:
    """The model's list of transformer blocks (Llama ``model.layers``, GPT-2 ``transformer.h``, ...)."""
    import torch.nn as nn

    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ConfigError("method: freeze: cannot find this model's list of transformer blocks; use lora or full")


def apply(model: Any, cfg: Any, ctx: Any = None) -> Any:
    settings = cfg.freeze
    blocks = decoder_blocks(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for block in list(blocks)[len(blocks) - settings.last_n_layers :] if settings.last_n_layers else []:
        for p in block.parameters():
            p.requires_grad_(True)
    for name, p in model.named_parameters():
        if any(m in name for m in settings.modules):
            p.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("freeze: last_n_layers is 0 and no freeze.modules match: nothing would be trained")
    return model
