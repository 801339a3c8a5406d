"""LoRA (Hu et al. 2021), DoRA (Liu et al. 2024) and QLoRA (Dettmers et al. 2023) through PEFT."""

from __future__ import annotations

from typing import Any

from lmtune.errors import ConfigError


def lora_config(cfg: Any, **extra: Any) -> Any:
    from peft import LoraConfig

    lora = cfg.lora
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,  # None -> PEFT's default for the architecture
        bias=lora.bias,
        **extra,
    )


def apply(model: Any, cfg: Any, ctx: Any = None) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg))


def apply_dora(model: Any, cfg: Any, ctx: Any = None) -> Any:
    """LoRA with the weight split into magnitude and direction; only the direction gets the low-rank update."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg, use_dora=True))


def apply_qlora(model: Any, cfg: Any, ctx: Any = None) -> Any:
    """LoRA on a 4-bit NF4 base; the base was loaded quantised by ``lmtune.models`` (CUDA only)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise ConfigError("method: qlora needs the base loaded in 4 bits (a CUDA GPU and bitsandbytes)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    return get_peft_model(model, lora_config(cfg))
