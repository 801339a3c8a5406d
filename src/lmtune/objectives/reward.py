"""``objective: reward`` — a reward model from preference pairs on TRL's ``RewardTrainer``: the policy's body
with a one-score head (``AutoModelForSequenceClassification``, Bradley-Terry loss), saved merged so that
``eval.reward_model`` and other tools load it as a plain model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.data.encode import Encoder
from lmtune.evaluate import preference as P
from lmtune.methods import MethodContext, apply_method
from lmtune.methods.merge import merged_model
from lmtune.objectives import on_trl
from lmtune.objectives.spec import Built, Objective, Task
from lmtune.run_folder import save_into

# a sequence classifier has no perplexity and writes no answers: its measure is held-out pair accuracy
UNUSED = (
    *on_trl.UNUSED_ON_TRL, "eval.reference", "eval.forgetting_threshold", "eval.metrics", "eval.max_new_tokens",
    "eval.max_samples", "eval.checks", "eval.reward_model",
)  # fmt: skip


def attach(model: Any, cfg: RunConfig, ctx: MethodContext) -> Any:
    """Full fine-tuning as any objective; LoRA / DoRA as a sequence classifier, the new score head trained whole."""
    if cfg.method == "full":
        return apply_method(model, cfg, ctx)
    from peft import get_peft_model

    from lmtune.methods.lora import lora_config

    config = lora_config(cfg, use_dora=cfg.method == "dora")
    config.task_type = "SEQ_CLS"  # PEFT then trains the new score head in full (modules_to_save)
    return get_peft_model(model, config)


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    from trl import RewardConfig, RewardTrainer

    args = on_trl.trl_config(RewardConfig, cfg, center_rewards_coefficient=cfg.reward.center_rewards_coefficient,
                             max_length=cfg.data.max_length)  # fmt: skip
    return on_trl.build(RewardTrainer, args, model, tokenizer, task, cfg, callbacks)


def save(trainer: Any, model: Any, tokenizer: Any, out: Path) -> bool:
    """A LoRA reward model is used as a whole: its update and trained score head merged into a plain folder.
    Returns False where the trainer's own save is the right one (full fine-tuning)."""
    if not hasattr(model, "merge_and_unload"):
        return False
    import copy

    merged = merged_model(copy.deepcopy(model))  # the trained model stays as it is for the measures
    save_into(out, lambda staging: (merged.save_pretrained(staging), tokenizer.save_pretrained(staging)))
    return True


def measures(model: Any, tokenizer: Any, encoder: Encoder, task: Task, cfg: RunConfig, tuned: bool) -> tuple:
    """Accuracy of the scores on held-out pairs (chosen scored above rejected) and their margin."""
    pairs = [ex for ex in task.held_out if ex.rejected is not None]
    return {"reward_pairs": P.reward_pair_metrics(model, tokenizer, pairs, cfg.eval.batch_size)}, []


OBJECTIVE = Objective(
    name="reward", prepare=on_trl.prepare, trainer=trainer, measures=measures, unused=UNUSED, head="score",
    attach=attach, save=save, settings=lambda cfg: cfg.reward.model_dump(), lever_note=on_trl.LEVER_NOTE,
)  # fmt: skip
