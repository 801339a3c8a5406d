"""Reward functions for GRPO: built-ins and ``module:function`` references to the user's own Python.

Every function has TRL's reward-function signature, ``f(prompts, completions, **columns) -> list[float]``,
where ``completions`` are conversational (``[{"role": "assistant", "content": ...}]``) or plain strings
and ``columns`` are the dataset's other columns (e.g. GSM8K's ``answer``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from lmtune.config.objectives import GrpoConfig
from lmtune.data.preference import completion_text
from lmtune.errors import ConfigError

NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
FINAL_NUMBER = re.compile(rf"(?:####\s*({NUMBER})|\\boxed\{{\s*({NUMBER})\s*\}})")


def final_number(text: str) -> float | None:
    """The number after the last ``####`` or in the last ``\\boxed{}`` (GSM8K's and MATH's conventions)."""
    found = FINAL_NUMBER.findall(text)
    if not found:
        return None
    a, b = found[-1]
    try:
        return float((a or b).replace(",", ""))
    except ValueError:
        return None


def number_match(prompts: list, completions: list, answer: list | None = None, **_: Any) -> list[float]:
    """1.0 when the completion's final number equals the reference answer's final number, else 0.0."""
    if answer is None:
        raise ValueError("the number_match reward needs an 'answer' column in the data")
    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        expected = final_number(str(reference))
        if expected is None:  # a bare number as the answer column
            try:
                expected = float(str(reference).replace(",", "").strip())
            except ValueError:
                expected = None
        got = final_number(completion_text(completion))
        scores.append(1.0 if expected is not None and got is not None and abs(got - expected) < 1e-6 else 0.0)
    return scores


def format_reward(pattern: str) -> Callable[..., list[float]]:
    regex = re.compile(pattern)

    def format_match(prompts: list, completions: list, **_: Any) -> list[float]:
        return [1.0 if regex.fullmatch(completion_text(c).strip()) else 0.0 for c in completions]

    return format_match


def length_reward(target: int) -> Callable[..., list[float]]:
    def length(prompts: list, completions: list, **_: Any) -> list[float]:
        out = []
        for c in completions:
            n = len(completion_text(c))
            out.append(1.0 if n <= target else max(0.0, 1.0 - (n - target) / target))
        return out

    return length


def reward_functions(cfg: GrpoConfig) -> list[Callable[..., list[float]]]:
    """The configured reward functions, built-ins first resolved, user functions imported."""
    builtins = {
        "number_match": lambda: number_match,
        "format": lambda: format_reward(cfg.format_pattern),
        "length": lambda: length_reward(cfg.target_length),
    }
    return [builtins[name]() if name in builtins else import_function(name) for name in cfg.reward_functions]


def import_function(ref: str, key: str = "grpo.reward_functions") -> Callable[..., list[float]]:
    """``module:function`` imported; a one-line ConfigError naming ``key`` when it cannot be."""
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{key}: {ref}: cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"{key}: {ref}: not a function")
    return fn
