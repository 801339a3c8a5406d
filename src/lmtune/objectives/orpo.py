"""``objective: orpo`` — Odds Ratio Preference Optimization (Hong et al. 2024), no reference model, on TRL's
``experimental.orpo.ORPOTrainer``."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.objectives import measures, on_trl
from lmtune.objectives.spec import Built, Objective, Task


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    args = on_trl.trl_config(ORPOConfig, cfg, beta=cfg.orpo.beta, max_length=cfg.data.max_length)
    return on_trl.build(ORPOTrainer, args, model, tokenizer, task, cfg, callbacks)


OBJECTIVE = Objective(
    name="orpo", prepare=on_trl.prepare, trainer=trainer, measures=measures.measures, unused=on_trl.UNUSED_ON_TRL,
    settings=lambda cfg: cfg.orpo.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
