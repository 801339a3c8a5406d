"""YAML file + ``--set`` overrides -> a validated `RunConfig`, and back to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lmtune.config.messages import describe
from lmtune.config.run import RunConfig
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
            cfg.stage_configs()  # every stage is validated now, not when it starts
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if cfg.sweep:
        from lmtune.sweep.space import check_sweep  # the space is checked against this very config

        check_sweep(raw, cfg, where)
    return cfg


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
