"""The config form, built from the pydantic schema, and the form's values turned back into a config.

The form sends ``key.path=value`` lines, the same thing ``lmtune train --set`` takes; they are applied
with the CLI's own `apply_override` and checked with `validate_config`, so every message the page shows
is the one the command line prints for the same value.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from lmtune.config import RunConfig, apply_override, read_yaml, validate_config
from lmtune.errors import ConfigError
from lmtune.objectives import check_keys

OPEN_SECTIONS = ("model", "data", "training", "eval", "lora")
"""Sections shown unfolded; the others (other methods and objectives) start folded."""
FREE_KEYS = ("stages",)
"""Keys with nested lists of mappings: edited as ``--set`` lines under "more keys", not as a field."""


@dataclass
class FormField:
    key: str  # "training.learning_rate"
    default: str  # as YAML, e.g. "0.0002"
    help: str
    choices: list[str] = field(default_factory=list)
    strict: bool = False  # only the choices are valid (a <select>), else they are suggestions


@dataclass
class FormSection:
    name: str  # "" for the top-level keys (seed, method, objective)
    help: str
    fields: list[FormField]
    open: bool = True


def form_sections() -> list[FormSection]:
    """Every section of `RunConfig` with its fields, defaults, choices and help text."""
    top = FormSection("", _doc(RunConfig), [])
    sections = [top]
    docs = _field_docs(RunConfig)
    for name, info in RunConfig.model_fields.items():
        if name in FREE_KEYS:
            continue
        model = _model_of(info.annotation)
        if model is None:
            top.fields.append(_field(name, info, docs.get(name, "")))
            continue
        section_docs = _field_docs(model)
        fields = [_field(f"{name}.{k}", i, section_docs.get(k, "")) for k, i in model.model_fields.items()]
        sections.append(FormSection(name, _doc(model), fields, open=name in OPEN_SECTIONS))
    return sections


def _field(key: str, info: Any, help_text: str) -> FormField:
    default = info.get_default(call_default_factory=True) if not info.is_required() else None
    choices, strict = _choices(key, info.annotation)
    shown = "" if info.is_required() else (_choice(default) if strict else _yaml_scalar(default))
    return FormField(key, shown, _plain(help_text or info.description or ""), choices, strict)


def _choice(value: Any) -> str:
    """A value as a <select> option: ``true``, ``no``, ``lora`` (no YAML quotes around ``'no'``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _plain(doc: str) -> str:
    """A docstring as one line of page text (reST ````code```` marks dropped)."""
    return " ".join(doc.replace("``", "").split())


def _choices(key: str, annotation: Any) -> tuple[list[str], bool]:
    from lmtune.config.objectives import OBJECTIVES
    from lmtune.methods import METHODS

    if key in ("method", "objective"):  # plain strings checked against a registry, not Literal types
        return list(METHODS if key == "method" else OBJECTIVES), True
    if annotation is bool:
        return ["true", "false"], True
    literal = [str(a) for a in _literal_args(annotation)]
    only_literal = typing.get_origin(annotation) is Literal
    return literal, only_literal


def _literal_args(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _literal_args(arg)]
    return []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field: ``Section`` or an optional ``Section | None`` (e.g. ``privacy``)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _doc(model: type[BaseModel]) -> str:
    return _plain(model.__doc__ or "")


def _field_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field (lmtune documents fields that way, as litgpt does).

    pydantic reads these itself only with ``use_attribute_docstrings``, which would also change the
    JSON schema the configs expose; its extractor is called directly instead (it is not public API,
    hence the fallback to no help text).
    """
    try:
        from pydantic._internal._docs_extraction import extract_docstrings_from_cls
    except ImportError:
        return {}
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):  # a subclass's docstring wins
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            try:
                docs.update(extract_docstrings_from_cls(cls, use_inspect=True))
            except (OSError, TypeError):  # no source available (e.g. a frozen install)
                pass
    return docs


def _yaml_scalar(value: Any) -> str:
    """A value as it is written after ``--set key=`` (flow YAML, one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


# --------------------------------------------------------------------------- form <-> config


def form_lines(values: dict[str, str], more: str = "") -> list[str]:
    """``key=value`` lines from the form's filled-in fields (empty ones take the default) and "more keys"."""
    named = _named_choices()
    lines = [f"{key}={json.dumps(value) if key in named else value}" for key, value in values.items() if value.strip()]
    return lines + [line.strip() for line in more.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@cache
def _named_choices() -> frozenset[str]:
    """Fields picked from a list of names: sent quoted, so a choice like ``no`` stays the word, not YAML's false."""
    return frozenset(f.key for s in form_sections() for f in s.fields if f.strict and f.choices != ["true", "false"])


def raw_config(lines: list[str]) -> dict[str, Any]:
    """The raw YAML mapping the lines describe, built as ``--set`` builds it."""
    raw: dict[str, Any] = {}
    for line in lines:
        apply_override(raw, line)
    return raw


def config_yaml(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True) if raw else ""


def check_form(lines: list[str], where: str) -> tuple[str, RunConfig | None, str | None]:
    """(YAML the form makes, the validated config or None, the CLI's one-line message or None)."""
    try:
        raw = raw_config(lines)
    except ConfigError as e:
        return "", None, f"lmtune: error: {e}"
    text = config_yaml(raw)
    try:
        cfg = validate_config(raw, where)
        check_keys(cfg, where)  # a key the objective or method does not read, said as lmtune train says it
        return text, cfg, None
    except ConfigError as e:
        return text, None, f"lmtune: error: {e}"


def form_values(path: Path) -> tuple[dict[str, str], str]:
    """A YAML config file as form values (``key -> YAML text``) plus the keys the form has no field for."""
    raw = read_yaml(path)
    known = {f.key: f for s in form_sections() for f in s.fields}
    values: dict[str, str] = {}
    more: list[str] = []
    for key, value in _flatten(raw):
        if key in known:
            values[key] = _choice(value) if known[key].strict else _yaml_scalar(value)
        else:
            more.append(f"{key}={_yaml_scalar(value)}")
    return values, "\n".join(more)


def _flatten(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in raw.items():
        if isinstance(value, dict) and value and prefix == "":  # sections; deeper mappings stay one value
            out += _flatten(value, f"{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
