"""What the objectives trained on TRL's trainers share: their config, their datasets, the keys they do not read.

No loss is written here: TRL's are used.  TRL 1.x traps handled once, here:

* its configs default to ``bf16=True`` (``bf16=None`` means "not fp16"), which fails on a CPU-only
  machine: lmtune passes ``training.bf16`` as set, False by default;
* with a PEFT model and no ``ref_model`` the reference policy is the same model with its adapter
  switched off (one model in memory); lmtune passes the PEFT model and no reference;
* ``max_prompt_length`` and the adapter-name arguments are gone; lengths come from ``data.max_length``.
"""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.data.encode import Encoder
from lmtune.data.preference import to_unpaired, trl_rows
from lmtune.data.prepare import TaskData
from lmtune.objectives.spec import Built, Task
from lmtune.train import guarded, training_argument_values

UNUSED_ON_TRL = (
    # lmtune's own training step: TRL's trainers compute their losses their own way
    "training.packing", "training.chunked_loss", "training.fused_loss", "training.fused_norm",
    "training.fast_dropout", "training.plan",
    "continual", "privacy",  # replay / EWC and DP-SGD are wired into the supervised step only
    "eval.generate_every", "eval.generate_samples",  # generation during training: the supervised Trainer's
    "eval.stride",  # held-out perplexity of text rows: supervised runs measure it
    "data.train_on_prompt",  # TRL scores the answers only
)  # fmt: skip
LEVER_NOTE = (
    "speed levers and plan: objective {name} trains with TRL's own step; lmtune's plan, packing, chunked loss "
    "and fused norm / dropout are for objective sft"
)


def trl_config(config_cls: type, cfg: RunConfig, **objective: Any) -> Any:
    """A TRL config from the ``training`` section plus the objective's own options."""
    args = training_argument_values(cfg)
    if "remove_unused_columns" not in (cfg.training.model_extra or {}):
        args.pop("remove_unused_columns", None)  # TRL's trainers choose the columns they keep
    args.setdefault("bf16", False)
    args.setdefault("fp16", False)
    return config_cls(**args, **objective)


def prepare(cfg: RunConfig, data: TaskData, encoder: Encoder, tokenizer: Any) -> Task:
    """The examples as TRL's dataset columns (KTO's pairs unpaired into single labelled answers)."""
    from datasets import Dataset

    train = to_unpaired(data.train) if cfg.objective == "kto" else data.train
    train_ds = Dataset.from_list(trl_rows(train, cfg.objective))
    eval_ds = None
    if cfg.training.eval_strategy != "no":
        held = data.eval
        if cfg.objective == "kto" and held and held[0].rejected:
            held = to_unpaired(held)
        eval_ds = Dataset.from_list(trl_rows(held, cfg.objective))
    line = f"data: {len(train)} train / {len(data.eval)} held-out rows ({data.shape}), objective {cfg.objective}"
    return Task(train_ds, eval_ds, data.eval, len(train), [line])


def build(trainer_cls: type, args: Any, model: Any, tokenizer: Any, task: Task, cfg: RunConfig,
          callbacks: list, **more: Any) -> Built:  # fmt: skip
    """``trainer_cls`` made lmtune's (checkpoint commit, non-finite stop) on the task's datasets."""
    trainer = guarded(trainer_cls, cfg.training.save_total_limit)(
        model=model, args=args, train_dataset=task.train, eval_dataset=task.eval, processing_class=tokenizer,
        callbacks=callbacks, **more,
    )  # fmt: skip
    return Built(trainer)
