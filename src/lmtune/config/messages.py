"""Messages for config problems: one line per problem, the key named, a close match suggested."""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import cache
from typing import Any

from pydantic import BaseModel


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


def describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"{'.'.join(loc)}: unknown key{did_you_mean(loc[-1], _fields_at(loc[:-1]))}"
    if kind == "missing":
        return f"{'.'.join(loc)}: required key is missing"
    if kind == "value_error" and isinstance(unknown := err.get("ctx", {}).get("error"), KeyProblem):
        return f"{'.'.join(loc)}.{unknown.key}: {unknown}"
    msg = msg.removeprefix("Value error, ")
    found = err.get("input")
    shown = "" if isinstance(found, dict) else f" (found {found!r})"
    text = msg[0].lower() + msg[1:] + shown
    return f"{'.'.join(loc)}: {text}" if loc else text  # whole-config checks name their keys themselves


def _fields_at(loc: list[str]) -> list[str]:
    from lmtune.config.run import RunConfig  # the sections import these messages

    model: type[BaseModel] = RunConfig
    for part in loc:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return list(model.model_fields)
