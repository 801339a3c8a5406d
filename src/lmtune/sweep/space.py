"""The search space against the run config: every key exists, every bound and choice is a value it accepts.

Checked when the config loads, so a bad space is one line before any trial starts.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any

from pydantic import BaseModel

from lmtune.config.messages import did_you_mean, training_argument_names
from lmtune.errors import ConfigError

NOT_SEARCHABLE = {
    "training.output_dir": "each trial runs in its own folder under the sweep's training.output_dir",
    "stages": "a staged run is not one trial",
    "sweep": "the search cannot search itself",
}


def check_sweep(raw: dict[str, Any], cfg: Any, where: str) -> None:
    """Raise ``ConfigError`` naming the ``sweep`` key for the first problem of the space or the objective."""
    from lmtune.sweep.objective import check_objective

    try:
        check_objective(cfg)
        for key, spec in cfg.sweep.space.items():
            _check_entry(without_sweep(raw), key, spec, where)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_entry(base: dict[str, Any], key: str, spec: Any, where: str) -> None:
    from lmtune.config.loader import validate_config

    kind = key_type(key)
    at = f"sweep.space.{key}"
    if isinstance(spec, dict) and kind not in (int, float):
        raise ConfigError(f"{at}: not a number key; give a list of choices")
    if isinstance(spec, dict) and kind is int and not _whole(spec):
        raise ConfigError(f"{at}: a whole-number key: low, high and step must be whole numbers")
    values = [spec["low"], spec["high"]] if isinstance(spec, dict) else spec
    for value in values:
        try:
            validate_config(with_value(base, key, value), where)
        except ConfigError as e:
            problem = str(e).removeprefix(f"{where}: ")
            raise ConfigError(f"{at}: the config refuses {value!r} ({problem})") from None


def key_type(key: str) -> type:
    """``int``, ``float`` or ``object`` for a dotted config key; ``ConfigError`` when no such key exists."""
    from lmtune.config.run import RunConfig

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
    from lmtune.config.run import RunConfig

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


def _whole(spec: dict[str, Any]) -> bool:
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
