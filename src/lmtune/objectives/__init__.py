"""Training objectives: one module each, registered by name (``objective:`` in the config).

Each module's ``OBJECTIVE`` (`lmtune.objectives.spec.Objective`) says how its examples become the trainer's
data, how its trainer is built, its held-out measures and which config keys it does not read; the one run
(``lmtune.pipeline.finetune``) does the rest.  Adding an objective is its own module plus one line below.

* ``sft``: supervised answers on lmtune's Trainer step;
* ``dpo`` / ``kto`` / ``orpo`` / ``simpo`` / ``reward`` / ``grpo``: on TRL's trainers (``on_trl``, ``measures``),
  with GRPO's reward functions in ``rewards``;
* ``distill``: a depth-pruned student of the model, taught by it on TRL's GKD trainer.
"""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig, dump_config
from lmtune.config.objectives import OBJECTIVES as OBJECTIVE_NAMES
from lmtune.errors import ConfigError
from lmtune.methods import SECTIONS as METHOD_SECTIONS
from lmtune.objectives import distill, dpo, grpo, kto, orpo, reward, sft, simpo
from lmtune.objectives.spec import Built, Objective, Task

OBJECTIVES: dict[str, Objective] = {
    "sft": sft.OBJECTIVE,
    "dpo": dpo.OBJECTIVE,
    "kto": kto.OBJECTIVE,
    "orpo": orpo.OBJECTIVE,
    "simpo": simpo.OBJECTIVE,
    "reward": reward.OBJECTIVE,
    "grpo": grpo.OBJECTIVE,
    "distill": distill.OBJECTIVE,
}

__all__ = ["OBJECTIVES", "Built", "Objective", "Task", "check_keys", "config_text", "objective_of", "unused_keys"]


def objective_of(cfg: RunConfig) -> Objective:
    """The registered objective of ``cfg`` (its name was validated when the config loaded)."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"objective: {cfg.objective!r} has no registered trainer ({', '.join(OBJECTIVES)})")
    return OBJECTIVES[cfg.objective]


def unused_keys(cfg: RunConfig) -> dict[str, str]:
    """Every config key and section this run does not read -> who does not read it."""
    who = f"objective {cfg.objective}"
    found = {key: who for key in objective_of(cfg).unused}
    found |= {name: who for name in OBJECTIVE_NAMES if name != cfg.objective and name != "sft"}
    used_section = METHOD_SECTIONS.get(cfg.method)
    found |= {s: f"method {cfg.method}" for s in set(METHOD_SECTIONS.values()) if s != used_section}
    return found


def check_keys(cfg: RunConfig, where: str = "config") -> None:
    """A key set in the config that this run does not read is an error (one line naming it and why)."""
    for key, who in unused_keys(cfg).items():
        if asked := _asked(cfg, key):
            them = "them" if len(asked) > 1 else "it"
            raise ConfigError(f"{where}: {', '.join(asked)}: {who} does not use {them}; remove {them} (or choose "
                              f"a{_user(who)} that does)")  # fmt: skip


def config_text(cfg: RunConfig) -> str:
    """The resolved config as YAML without the keys the run does not read: it trains again as it is."""
    return dump_config(cfg, exclude=dump_exclusions(cfg))


def dump_exclusions(cfg: RunConfig) -> dict[str, Any]:
    """The unused keys as pydantic's ``exclude`` argument: config.yaml holds only what the run reads."""
    out: dict[str, Any] = {}
    for key in unused_keys(cfg):
        section, _, name = key.partition(".")
        if not name:
            out[section] = True
        elif out.get(section) is not True:
            out.setdefault(section, set()).add(name)
    return out


def _asked(cfg: RunConfig, key: str) -> list[str]:
    """The keys under ``key`` the config asks for: written in it with a value that turns something on.

    Writing ``null``, ``false``, ``0`` or ``[]`` for a feature the run does not have asks for nothing, so a
    config that switches such a feature off explicitly still loads.
    """
    section, _, name = key.partition(".")
    if section not in cfg.model_fields_set or getattr(cfg, section) is None:
        return []
    value = getattr(cfg, section)
    names = [name] if name else [n for n in type(value).model_fields if n in value.model_fields_set]
    return [f"{section}.{n}" for n in names if n in value.model_fields_set and _asks(getattr(value, n))]


def _asks(value: Any) -> bool:
    return value not in (None, False, 0, "") and value != []


def _user(who: str) -> str:
    return "n objective" if who.startswith("objective") else " method"
