"""The search space against the run config: what each dotted key is, and a config with a key set.

``lmtune.config.loader`` checks the space with these when the config loads (every key exists, every bound
and choice is a value the config accepts), so a bad space is one line before any trial starts;
``lmtune.sweep`` builds each trial's config with them.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any

from pydantic import BaseModel

from lmtune.config.messages import did_you_mean, training_argument_names
from lmtune.config.run import RunConfig
from lmtune.errors import ConfigError

NOT_SEARCHABLE = {
    "training.output_dir": "each trial runs in its own folder under the sweep's training.output_dir",
    "stages": "a staged run is not one trial",
    "sweep": "the search cannot search itself",
}


def key_type(key: str) -> type:
    """``int``, ``float`` or ``object`` for a dotted config key; ``ConfigError`` when no such key exists."""
    for prefix, why in NOT_SEARCHABLE.items():
        if key == prefix or key.startswith(prefix + "."):
            raise ConfigError(f"sweep.space.{key}: not searchable ({why})")
    model: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        fields = model.model_fields
        if part in fields:
            annotation = fields[part].annotation
        elif model.__name__ == "TrainingConfig" and part in training_argument_names():
            annotation = _training_argument_type(part)
        else:
            raise ConfigError(f"sweep.space.{key}: unknown key{did_you_mean(here, all_keys())}")
        inner = _model_in(annotation)
        if inner is None and i < len(parts) - 1:
            raise ConfigError(f"sweep.space.{key}: '{here}' is a value, not a section")
        if inner is not None and i == len(parts) - 1:
            example = f"{key}.{next(iter(inner.model_fields))}"
            raise ConfigError(f"sweep.space.{key}: a section; name a key inside it (e.g. {example})")
        model = inner
    return _number_kind(annotation)


def all_keys() -> list[str]:
    """Every dotted key of the run config (TrainingArguments' own fields under ``training``)."""

    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            inner = _model_in(field.annotation)
            out += walk(inner, f"{prefix}{name}.") if inner else [f"{prefix}{name}"]
        return out

    return walk(RunConfig, "") + [f"training.{n}" for n in sorted(training_argument_names())]


def with_value(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(raw)
    node = out
    for part in key.split(".")[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key.split(".")[-1]] = value
    return out


def without_sweep(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "sweep"}


def whole_numbers(spec: dict[str, Any]) -> bool:
    """Whether a range's bounds and step are whole numbers (an int key's range must be)."""
    return all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step"))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section an annotation holds (``X`` or ``X | None``), else None."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _number_kind(annotation: Any) -> type:
    """int for whole-number keys, float for real ones, object for the rest (choices only)."""
    members = set(typing.get_args(annotation)) if _is_union(annotation) else {annotation}
    if float in members:
        return float
    if int in members and bool not in members:
        return int
    return object


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _training_argument_type(name: str) -> Any:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return hints.get(name, next(f.type for f in dataclasses.fields(TrainingArguments) if f.name == name))
