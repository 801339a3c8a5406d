"""``objective: kto`` — Kahneman-Tversky Optimization (Ethayarajh et al. 2024) on TRL's ``KTOTrainer``:
single answers labelled desirable or not (preference pairs are unpaired into two)."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.objectives import measures, on_trl
from lmtune.objectives.spec import Built, Objective, Task


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl import KTOConfig, KTOTrainer

    k = cfg.kto
    args = on_trl.trl_config(KTOConfig, cfg, beta=k.beta, desirable_weight=k.desirable_weight,
                             undesirable_weight=k.undesirable_weight, max_length=cfg.data.max_length)  # fmt: skip
    return on_trl.build(KTOTrainer, args, model, tokenizer, task, cfg, callbacks)


OBJECTIVE = Objective(
    name="kto", prepare=on_trl.prepare, trainer=trainer, measures=measures.measures, unused=on_trl.UNUSED_ON_TRL,
    settings=lambda cfg: cfg.kto.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
