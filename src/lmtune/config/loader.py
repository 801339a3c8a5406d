"""YAML file + ``--set`` overrides -> a validated `RunConfig`, and back to YAML.

A whole config is checked here, stages and search space included: each stage and each bound of the space
is itself a config, validated by `validate_config` like the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmtune.config.messages import KeyProblem, did_you_mean, plain_name
from lmtune.config.run import RunConfig
from lmtune.config.space import key_type, whole_numbers, with_value, without_sweep
from lmtune.config.sweep import check_objective
from lmtune.errors import ConfigError


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply ``--set key.path=value`` overrides, validate.

    Raises:
        ConfigError: one line naming the file and the offending key(s).
    """
    where = str(path) if path else "config"
    raw = read_yaml(Path(path)) if path else {}
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, where)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (model, method, data, ...), found {type(raw).__name__}"
        )
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``training.max_steps=20`` -> raw["training"]["max_steps"] = 20 (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.max_steps=20")
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def validate_config(raw: dict[str, Any], where: str = "config") -> RunConfig:
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = [describe(err) for err in e.errors(include_url=False)]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None
    if cfg.stages:
        for i, stage in enumerate(cfg.stages):
            if bad := sorted(set(stage) & {"seed", "model", "stages"}):
                raise ConfigError(f"{where}: stages[{i}].{bad[0]}: set it once, outside the stages")
        try:
            stage_configs(cfg)  # every stage is validated now, not when it starts
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if cfg.sweep:
        check_sweep(raw, cfg, where)  # the space is checked against this very config
    return cfg


def describe(err: dict[str, Any]) -> str:
    """One pydantic error of a run config as ``key.path: problem``, a close key suggested for a typo."""
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
    model: type[BaseModel] = RunConfig
    for part in loc:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return list(model.model_fields)


def stage_configs(cfg: RunConfig) -> list[tuple[str, RunConfig]]:
    """(name, config) of every stage, each a full config with its overrides applied."""
    # what the user wrote, not every default: a stage's config then knows which keys were set (an unused one
    # is an error, lmtune.objectives.check_keys), and validation fills in the defaults again
    base = cfg.model_dump(mode="json", exclude={"stages"}, exclude_unset=True)
    out = []
    for i, stage in enumerate(cfg.stages or []):
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{i + 1}"))
        if not plain_name(name):  # the stage folder goes inside output_dir, never elsewhere
            raise ConfigError(f"stages[{i}].name: {name!r}: use a plain name (letters, digits, '-', '_', '.')")
        merged = deep_merge(base, stage)
        merged.setdefault("training", {})["output_dir"] = str(Path(cfg.training.output_dir) / f"{i + 1}-{name}")
        out.append((name, validate_config(merged, f"stages[{i}] ({name})")))
    return out


def check_sweep(raw: dict[str, Any], cfg: RunConfig, where: str) -> None:
    """Raise ``ConfigError`` naming the ``sweep`` key for the first problem of the space or the objective."""
    try:
        check_objective(cfg)
        for key, spec in cfg.sweep.space.items():
            _check_entry(without_sweep(raw), key, spec, where)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_entry(base: dict[str, Any], key: str, spec: Any, where: str) -> None:
    kind = key_type(key)
    at = f"sweep.space.{key}"
    if isinstance(spec, dict) and kind not in (int, float):
        raise ConfigError(f"{at}: not a number key; give a list of choices")
    if isinstance(spec, dict) and kind is int and not whole_numbers(spec):
        raise ConfigError(f"{at}: a whole-number key: low, high and step must be whole numbers")
    values = [spec["low"], spec["high"]] if isinstance(spec, dict) else spec
    for value in values:
        try:
            validate_config(with_value(base, key, value), where)
        except ConfigError as e:
            problem = str(e).removeprefix(f"{where}: ")
            raise ConfigError(f"{at}: the config refuses {value!r} ({problem})") from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def dump_config(cfg: RunConfig, exclude: dict[str, Any] | None = None) -> str:
    """The resolved config as YAML (every default filled in), less the keys in ``exclude`` (pydantic's form)."""
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude=exclude), sort_keys=False, allow_unicode=True)
