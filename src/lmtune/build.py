"""The model a run trains, built the same way for ``lmtune train`` and ``lmtune plan``."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.data.prepare import TaskData
from lmtune.errors import ConfigError, DataError
from lmtune.extras import require
from lmtune.methods import NEEDS_CUDA, TRAINS_BASE_WEIGHTS
from lmtune.models import load_model, training_dtype
from lmtune.speed.attention import attention_for, training_on_cpu
from lmtune.speed.dropout import use_fast_dropout
from lmtune.speed.norm import use_fused_norm


def load_for_training(cfg: RunConfig, head: str = "causal") -> tuple[Any, Any, str, str]:
    """(model, tokenizer, base, dtype): the base model in the dtype and attention kernel this run trains with.

    ``head``: ``causal``, or ``score`` for a reward model (the base's body with a new one-score head)."""
    dtype = training_dtype(cfg.model.dtype, trains_base_weights=cfg.method in TRAINS_BASE_WEIGHTS)
    model_cfg = cfg.model.model_copy(update={"dtype": dtype})  # auto attention is chosen once the rows are known
    extra = {"num_labels": 1} if head == "score" else {}
    model, tokenizer, base = load_model(model_cfg, load_in_4bit=cfg.method in NEEDS_CUDA, head=head, **extra)
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


SHARDED = ("fsdp", "deepspeed")
"""``training`` keys passed to Trainer that shard the model over GPUs."""
SHARDED_ON_CPU = "FSDP / DeepSpeed need GPUs; use --nproc N for data parallel on CPU"


def check_device(cfg: RunConfig) -> None:
    """The method's, ``privacy``'s and the ``training`` section's needs, met by this machine (before anything
    loads): a private run needs the privacy extra (``lmtune plan`` says it too: the run it plans could not start)."""
    if cfg.privacy is not None:
        require("privacy", what="privacy: DP-SGD training")
    import torch

    if cfg.method in NEEDS_CUDA and not torch.cuda.is_available():
        raise ConfigError(
            f"method: {cfg.method} needs a CUDA GPU (4-bit bitsandbytes base); none found. Use method: lora on CPU"
        )
    extra = cfg.training.model_extra or {}
    for key in SHARDED:
        if extra.get(key) and not torch.cuda.is_available():
            raise ConfigError(f"training.{key}: {SHARDED_ON_CPU}")
    if extra.get("deepspeed"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("training.deepspeed: the deepspeed package is not installed (pip install deepspeed)")


def check_data_fits(cfg: RunConfig, data: TaskData) -> None:
    """Data whose shape cannot train ``cfg.objective`` (pairs for dpo, answers for sft, ...) fails here."""
    from lmtune.data.preference import data_problem

    if problem := data_problem(data.shape, cfg.objective):
        raise DataError(f"data.train ({data.shape}): {problem}")
