"""IA3 (Liu et al. 2022): learned vectors that rescale keys, values and feed-forward activations."""

from __future__ import annotations

from typing import Any


def apply(model: Any, cfg: Any, ctx: Any = None) -> Any:
    from peft import IA3Config, get_peft_model

    s = cfg.ia3
    # both null -> PEFT's per-architecture defaults (e.g. k_proj, v_proj, down_proj for Llama)
    return get_peft_model(
        model,
        IA3Config(task_type="CAUSAL_LM", target_modules=s.target_modules, feedforward_modules=s.feedforward_modules),
    )
