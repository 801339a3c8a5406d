"""``objective: simpo`` — Simple Preference Optimization (Meng et al. 2024), length-normalised and without a
reference model, on TRL's ``experimental.cpo.CPOTrainer`` with ``loss_type="simpo"``."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.objectives import measures, on_trl
from lmtune.objectives.spec import Built, Objective, Task


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    s = cfg.simpo
    args = on_trl.trl_config(CPOConfig, cfg, loss_type="simpo", beta=s.beta, simpo_gamma=s.gamma,
                             cpo_alpha=s.cpo_alpha, max_length=cfg.data.max_length)  # fmt: skip
    return on_trl.build(CPOTrainer, args, model, tokenizer, task, cfg, callbacks)


OBJECTIVE = Objective(
    name="simpo", prepare=on_trl.prepare, trainer=trainer, measures=measures.measures, unused=on_trl.UNUSED_ON_TRL,
    settings=lambda cfg: cfg.simpo.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
