"""Messages for config problems: one line per problem, the key named, a close match suggested."""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import cache


class KeyProblem(ValueError):
    """A problem with one key inside the section being validated: shown as ``<section>.<key>: <problem>``."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(problem)


class UnknownKey(KeyProblem):
    def __init__(self, key: str, valid: list[str]):
        super().__init__(key, f"unknown key{did_you_mean(key, valid)}")


@cache
def training_argument_names() -> frozenset[str]:
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def plain_name(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+", name)) and name not in (".", "..")


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
