"""LoRA (Hu et al. 2021) through PEFT: low-rank updates on frozen linear layers."""

from __future__ import annotations

from typing import Any


def apply(model: Any, cfg: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,  # None -> PEFT's default for the architecture
        bias=lora.bias,
    )
    return get_peft_model(model, peft_config)
