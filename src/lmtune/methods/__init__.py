"""Fine-tuning methods: one small module per family, registered by name.

Each entry maps a ``method:`` name to what it does to the model:
``apply(model, cfg, ctx) -> model to train``.  Adding a method means adding a
function, one line in ``METHODS`` and its name in ``lmtune.config.sections.METHOD_NAMES`` (the config,
below this package, checks names without importing it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmtune.methods import adalora, freeze, full, ia3, lora, prompts

logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """What a method may need beyond its config section."""

    total_steps: int = 0  # optimizer steps of the run (AdaLoRA's budget schedule)
    base_path: str = ""  # folder / id of the base weights (prompt-tuning's init tokenizer)
    callbacks: list[Any] = field(default_factory=list)  # TrainerCallbacks a method adds


METHODS: dict[str, Callable[[Any, Any, MethodContext], Any]] = {
    "full": full.apply,
    "freeze": freeze.apply,
    "lora": lora.apply,
    "dora": lora.apply_dora,
    "qlora": lora.apply_qlora,
    "adalora": adalora.apply,
    "ia3": ia3.apply,
    "prompt_tuning": prompts.apply_prompt_tuning,
    "p_tuning": prompts.apply_p_tuning,
    "prefix_tuning": prompts.apply_prefix_tuning,
    "p_tuning_v2": prompts.apply_prefix_tuning,
}
# the config section each method reads its settings from
SECTIONS = {
    "freeze": "freeze", "lora": "lora", "dora": "lora", "qlora": "lora", "adalora": "adalora", "ia3": "ia3",
    "prompt_tuning": "prompt_tuning", "p_tuning": "p_tuning", "prefix_tuning": "prefix_tuning",
    "p_tuning_v2": "prefix_tuning",
}  # fmt: skip
PEFT_METHODS = {"lora", "dora", "qlora", "adalora", "ia3", "prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2"}
NEEDS_CUDA = {"qlora"}
TRAINS_BASE_WEIGHTS = ("full", "freeze")  # the others keep the base frozen: it may be held in bfloat16
# The method names themselves, and which methods each objective trains with, are checked when the config
# loads: lmtune.config.sections.METHOD_NAMES and lmtune.config.objectives.OBJECTIVE_METHODS.


def apply_method(model: Any, cfg: Any, ctx: MethodContext | None = None) -> Any:
    """Apply ``cfg.method`` to ``model`` (the name was validated when the config loaded)."""
    ctx = ctx or MethodContext()
    if cfg.training.gradient_checkpointing and cfg.method in PEFT_METHODS:
        # frozen embeddings give checkpointed blocks inputs without grad; PEFT's documented fix
        model.enable_input_require_grads()
    return METHODS[cfg.method](model, cfg, ctx)


def settings(cfg: Any) -> dict[str, Any]:
    """The method's key settings, printed at start and written to metrics.json."""
    section = SECTIONS.get(cfg.method)
    out = getattr(cfg, section).model_dump() if section else {}
    return {"method": cfg.method, **out}


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; PEFT's own count for PEFT models."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
