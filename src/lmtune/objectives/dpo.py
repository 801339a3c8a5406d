"""``objective: dpo`` — Direct Preference Optimization (Rafailov et al. 2023) on TRL's ``DPOTrainer``."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.objectives import measures, on_trl
from lmtune.objectives.spec import Built, Objective, Task


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl import DPOConfig, DPOTrainer

    d = cfg.dpo
    losses = [d.loss_type] if isinstance(d.loss_type, str) else list(d.loss_type)
    args = on_trl.trl_config(DPOConfig, cfg, beta=d.beta, loss_type=losses, loss_weights=d.loss_weights,
                             label_smoothing=d.label_smoothing, max_length=cfg.data.max_length)  # fmt: skip
    return on_trl.build(DPOTrainer, args, model, tokenizer, task, cfg, callbacks)


OBJECTIVE = Objective(
    name="dpo", prepare=on_trl.prepare, trainer=trainer, measures=measures.measures, unused=on_trl.UNUSED_ON_TRL,
    settings=lambda cfg: cfg.dpo.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
