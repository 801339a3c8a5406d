"""The model a run trains, built the same way for ``lmtune train`` and ``lmtune plan``."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.extras import require
from lmtune.methods import NEEDS_CUDA, TRAINS_BASE_WEIGHTS
from lmtune.models import load_model, training_dtype
from lmtune.speed.attention import attention_for, training_on_cpu
from lmtune.speed.dropout import use_fast_dropout
from lmtune.speed.norm import use_fused_norm


def load_for_training(cfg: RunConfig) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, base, dtype): the base model in the dtype and attention kernel this run trains with.

    A private run (``privacy:``) needs the privacy extra: said here, before the model loads and before
    ``lmtune train`` makes the run folder (``lmtune plan`` says it too: the run it plans could not start).
    """
    if cfg.privacy is not None:
        require("privacy", what="privacy: DP-SGD training")
    dtype = training_dtype(cfg.model.dtype, trains_base_weights=cfg.method in TRAINS_BASE_WEIGHTS)
    model_cfg = cfg.model.model_copy(update={"dtype": dtype})  # auto attention is chosen once the rows are known
    model, tokenizer, base = load_model(model_cfg, load_in_4bit=cfg.method in NEEDS_CUDA)
    return model, tokenizer, base, dtype


def apply_speed_levers(model: Any, cfg: RunConfig, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
    """Patch the adapted model with the levers switched on; returns the facts ``metrics.json`` records.

    ``rows`` are the training rows: no batch row is longer than the longest of them (packing keeps rows
    within the longest example), which decides ``model.attn_implementation: auto``.
    """
    t = cfg.training
    longest = max((len(r["input_ids"]) for r in rows), default=0)
    attention = attention_for(cfg.model.attn_implementation, longest, training_on_cpu(cfg))
    if cfg.model.attn_implementation == "auto" and attention:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.set_attn_implementation(attention)
    return {
        "attention": getattr(model.config, "_attn_implementation", None),
        "fast_dropout_modules": use_fast_dropout(model) if t.fast_dropout else 0,
        "fused_norm_modules": use_fused_norm(model) if t.fused_norm else 0,
    }
