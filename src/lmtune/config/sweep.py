"""The ``sweep`` section: what ``lmtune sweep`` searches, and what it optimises.

Only the shape of each search-space entry is checked here, and whether the objective names a number
the run will measure (`check_objective`); whether the space's keys exist in the run config and whether
the config accepts their values is checked by ``lmtune.config.space`` (it needs the whole config),
before any trial starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lmtune.config.messages import KeyProblem
from lmtune.config.sections import _Section
from lmtune.errors import ConfigError

RANGE_KEYS = ("low", "high", "log", "step")
EVAL_LOSS = "eval_loss"
LOSS_LIKE = ("eval_loss", "finetuned.perplexity")  # the pruner's eval loss moves with these, the same way
MINIMIZED_WORDS = ("loss", "perplexity", "time", "forgetting")
MODEL_SECTIONS = ("base", "finetuned")
EXTRA_SECTIONS = ("reward", "checks", "by_task")  # metrics.json sections a run adds besides eval.metrics


class SweepConfig(_Section):
    """Hyper-parameter search with Optuna (``lmtune sweep``); ignored by ``lmtune train``."""

    objective: str = "eval_loss"
    """What a trial scores: ``eval_loss`` (the fine-tuned model's held-out loss per answer token, the log of
    ``finetuned.perplexity``) or a dotted path into the trial's ``metrics.json`` (``finetuned.bleu``,
    ``finetuned.rouge.rougeL``, ``finetuned.token_f1``, ``forgetting.perplexity_increase_percent``, ...)."""
    direction: Literal["minimize", "maximize"] | None = None
    """Default: minimize for losses, perplexities, times and forgetting; maximize for the other metrics."""
    trials: int | None = Field(None, gt=0)
    """Finished trials the study should end with (``--trials`` overrides it)."""
    pruner: Literal["median", "none"] = "median"
    """``median``: stop a trial whose intermediate eval loss is worse than the median of earlier trials at
    the same step (Optuna's ``MedianPruner``; needs ``training.eval_strategy``)."""
    heartbeat: int = Field(30, gt=0)
    """Seconds between a running trial's signs of life in the storage; a trial silent for twice that (its
    process was killed) is failed and queued again with the same parameters."""
    space: dict[str, Any]
    """Dotted config key -> ``{low, high, log?, step?}`` (a number range; int or float from the key's type)
    or a list of choices."""

    @field_validator("space")
    @classmethod
    def _entries_have_a_shape(cls, space: dict[str, Any]) -> dict[str, Any]:
        if not space:
            raise ValueError("name at least one config key to search")
        for key, spec in space.items():
            if isinstance(spec, list):
                _check_choices(key, spec)
            elif isinstance(spec, dict):
                _check_range(key, spec)
            else:
                raise KeyProblem(key, "give a list of choices or a range {low: ..., high: ...}")
        return space


def _check_choices(key: str, choices: list[Any]) -> None:
    if not choices:
        raise KeyProblem(key, "empty list of choices")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise KeyProblem(key, f"choice {choice!r}: choices are numbers, strings, booleans or null")
    if len({repr(c) for c in choices}) < len(choices):
        raise KeyProblem(key, "a choice is listed twice")


def _check_range(key: str, spec: dict[str, Any]) -> None:
    if unknown := sorted(set(spec) - set(RANGE_KEYS)):
        raise KeyProblem(key, f"{unknown[0]}: unknown range key (a range has {', '.join(RANGE_KEYS)})")
    if "low" not in spec or "high" not in spec:
        raise KeyProblem(key, "a range needs low and high")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise KeyProblem(key, f"{name} must be a number (found {v!r})")
    if low > high:
        raise KeyProblem(key, f"low ({low}) is above high ({high})")
    if not isinstance(spec.get("log", False), bool):
        raise KeyProblem(key, f"log must be true or false (found {spec['log']!r})")
    if spec.get("log") and low <= 0:
        raise KeyProblem(key, f"a log range needs low > 0 (found {low})")
    if spec.get("log") and step is not None:
        raise KeyProblem(key, "give log or step, not both")  # Optuna samples a log range continuously
    if step is not None and step <= 0:
        raise KeyProblem(key, f"step must be above 0 (found {step})")


# --------------------------------------------------------------------------- the objective


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
