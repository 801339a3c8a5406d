"""An adapter merged into its base: the one merge that training (stages, reward models) and export share.

Merges happen with PEFT's ``safe_merge`` (the merged weights are checked for NaN / inf before they replace
the base's), and a tied output layer gets its own weights first when the adapter changes the embeddings or
the head: with tied weights a merged update to one would silently change the other as well.
"""

from __future__ import annotations

from typing import Any

TIED_TARGETS = ("lm_head", "embed_tokens", "wte", "embed_out")


def merged_model(peft_model: Any) -> Any:
    """The plain model: the adapter's update added to the base (in the base's dtype; callers load float32)."""
    untie_if_adapted(peft_model)
    return peft_model.merge_and_unload(safe_merge=True)


def untie_if_adapted(peft_model: Any) -> None:
    """Give the output layer its own weights when an adapter changes the embeddings or the head."""
    import torch

    base = peft_model.get_base_model()
    if not getattr(base.config, "tie_word_embeddings", False):
        return
    touched = set()
    for cfg in peft_model.peft_config.values():
        targets = cfg.target_modules or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        touched |= {t for t in [*targets, *(cfg.modules_to_save or [])] if t in TIED_TARGETS}
    if not touched:
        return
    head = base.get_output_embeddings()
    layer = getattr(head, "base_layer", head)
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone())
    base.config.tie_word_embeddings = False
    if hasattr(base.config, "get_text_config"):
        base.config.get_text_config().tie_word_embeddings = False
