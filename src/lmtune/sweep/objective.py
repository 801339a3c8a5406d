"""What a trial scores: a name for a number in its ``metrics.json``, and which way is better."""

from __future__ import annotations

import math
from typing import Any

from lmtune.errors import ConfigError
from lmtune.report.tables import value

EVAL_LOSS = "eval_loss"
LOSS_LIKE = ("eval_loss", "finetuned.perplexity")  # the pruner's eval loss moves with these, the same way
MINIMIZED_WORDS = ("loss", "perplexity", "time", "forgetting")
MODEL_SECTIONS = ("base", "finetuned")
EXTRA_SECTIONS = ("reward", "checks", "by_task")  # metrics.json sections a run adds besides eval.metrics


def direction_of(sweep: Any) -> str:
    """``sweep.direction``, or the natural one for the objective (losses down, scores up)."""
    if sweep.direction:
        return sweep.direction
    return "minimize" if any(word in sweep.objective for word in MINIMIZED_WORDS) else "maximize"


def prunes(cfg: Any) -> bool:
    """Whether trials report their intermediate eval loss to the pruner."""
    return cfg.sweep.pruner == "median" and cfg.training.eval_strategy != "no"


def check_objective(cfg: Any) -> None:
    """``ConfigError`` when the objective names nothing this run's metrics.json will hold, or cannot be pruned on."""
    name, sweep = cfg.sweep.objective, cfg.sweep
    parts = name.split(".")
    if name == EVAL_LOSS or parts[0] in MODEL_SECTIONS:
        wanted = "perplexity" if name == EVAL_LOSS else parts[1] if len(parts) > 1 else None
        if wanted not in (*cfg.eval.metrics, *EXTRA_SECTIONS):
            raise ConfigError(
                f"sweep.objective: {name}: eval.metrics does not measure {wanted or 'anything named so'} "
                f"(it measures {', '.join(cfg.eval.metrics)})"
            )
        if parts[0] == "base" and not cfg.eval.base:
            raise ConfigError(f"sweep.objective: {name}: eval.base is off, so the base model is not measured")
    elif parts[0] == "forgetting" and not cfg.eval.reference:
        raise ConfigError(f"sweep.objective: {name}: eval.reference is off, so forgetting is not measured")
    elif parts[0] not in ("forgetting", "train_time_s", "run"):
        raise ConfigError(
            f"sweep.objective: {name}: name eval_loss or a number in metrics.json "
            "(finetuned.<metric>, forgetting.<key>, train_time_s)"
        )
    if prunes(cfg) and (name not in LOSS_LIKE or direction_of(sweep) != "minimize"):
        raise ConfigError(
            f"sweep.pruner: median prunes on the eval loss, which does not rank trials by {name} "
            f"({direction_of(sweep)}); set sweep.pruner: none"
        )
    if prunes(cfg) and cfg.objective != "sft":
        raise ConfigError(f"sweep.pruner: median prunes sft runs; set sweep.pruner: none for objective {cfg.objective}")


def objective_value(metrics: dict[str, Any], name: str) -> float | None:
    """The objective's number in a trial's metrics.json, None when absent.

    ``finetuned.bleu`` names ``finetuned.bleu.bleu`` (a metric's headline number under its own name).
    """
    if name == EVAL_LOSS:
        ppl = value(metrics, "finetuned.perplexity")
        return math.log(ppl) if ppl else None
    found = value(metrics, name)
    return found if found is not None else value(metrics, f"{name}.{name.split('.')[-1]}")
