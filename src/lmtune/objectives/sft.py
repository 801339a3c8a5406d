"""``objective: sft`` — supervised answers on lmtune's own Trainer step.

What only this objective has: tokenised rows with the prompt masked (cached), packing, the chunked /
fused loss, the plan and the speed levers, replay and EWC against forgetting, generation metrics during
training, DP-SGD (``privacy``), and the held-out perplexity and generation metrics.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from lmtune.build import apply_speed_levers
from lmtune.config import RunConfig
from lmtune.data.cache import tokenize_cached
from lmtune.data.collate import PackCollator, PadCollator
from lmtune.data.encode import Encoder
from lmtune.data.general import reference_rows
from lmtune.data.prepare import TaskData, check_enough_examples
from lmtune.evaluate.run import evaluate_model
from lmtune.launch import ranks
from lmtune.loss import fusable_head, loss_parts
from lmtune.methods.continual import ewc_penalty, fisher_diagonal, replay_rows
from lmtune.objectives.measures import answer_checks
from lmtune.objectives.spec import Built, Objective, Task
from lmtune.plan import make_plan, with_batch
from lmtune.run_folder import TRAIN_LOG
from lmtune.train import chunked_loss, guarded, training_arguments, use_packing


def prepare(cfg: RunConfig, data: TaskData, encoder: Encoder, tokenizer: Any) -> Task:
    """Tokenised rows (from the cache when the same data was tokenised before), plus replayed reference rows."""
    tokens, cached = tokenize_cached(encoder, data, cfg.data, cfg.seed)
    check_enough_examples(len(tokens.train), cfg)
    fraction = cfg.continual.replay_fraction
    regular = reference_rows(encoder, cfg.continual.reference)
    replayed = replay_rows(regular, len(tokens.train), fraction) if fraction else []
    lines = [
        f"data: {len(tokens.train)} train / {len(tokens.eval_examples)} held-out examples "
        f"({data.shape}, {encoder.template} layout{', tokens from cache' if cached else ''})"
    ]
    if replayed:
        lines.append(f"replay: {len(replayed)} rows of {cfg.continual.reference} mixed into the training data")
    rows = tokens.train + replayed
    extra = {"encoder": encoder, "eval_owner": tokens.eval_owner, "regular": regular}
    return Task(rows, tokens.eval, tokens.eval_examples, len(rows), lines, extra)


def tune(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, memory_budget: int | None) -> tuple:
    """The speed levers, then the plan (rank 0 plans for one process; every rank takes its batch size)."""
    facts = apply_speed_levers(model, cfg, task.train)
    if not cfg.training.plan:
        return cfg, facts, []
    plan = ranks.broadcast(make_plan(model, tokenizer, task.train, task.eval, cfg, memory_budget)
                           if ranks.is_main() else None)  # fmt: skip
    facts["plan"] = plan.facts()
    return with_batch(cfg, plan.batch, plan.accumulation), facts, [plan.table()]


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    """lmtune's Trainer: the loss on labelled positions only, in chunks, plus EWC's penalty when asked for."""
    from transformers import Trainer

    from lmtune.callbacks import GenerationDuringTraining

    args = training_arguments(cfg)
    penalty = _ewc(model, task, tokenizer, cfg, echo)
    t = cfg.training
    packing = t.packing and use_packing(model)
    lm_loss = chunked_loss(model, args, fused=t.fused_loss) if t.chunked_loss else None
    if cfg.eval.generate_every:
        score = partial(_generation_scores, tokenizer=tokenizer, task=task, cfg=cfg)
        log = Path(args.output_dir) / TRAIN_LOG
        callbacks = [*callbacks, GenerationDuringTraining(log, cfg.eval.generate_every, score)]

    class SupervisedTrainer(Trainer):
        """Trainer with lmtune's loss (labelled positions only, in chunks) plus a penalty term (EWC)."""

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            # evaluate() only asks for the loss (no compute_metrics); anyone wanting logits gets the model's path
            if lm_loss is not None and model is self.model and (not return_outputs or self.compute_metrics is None):
                # as Trainer does: num_items_in_batch only reaches a model that takes loss kwargs, and then
                # Trainer takes the loss as already normalised over the accumulated batch
                items = kwargs.get("num_items_in_batch") if self.model_accepts_loss_kwargs else None
                with self.accelerator.autocast():  # mixed precision sits on model.forward, which is bypassed
                    loss = lm_loss(inputs, items)
                out = (loss, {"loss": loss}) if return_outputs else loss
            else:
                out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            if penalty is None:
                return out
            if return_outputs:
                return out[0] + penalty(), out[1]
            return out + penalty()

    trainer_class, private = guarded(SupervisedTrainer, t.save_total_limit), None
    if cfg.privacy is not None:
        from lmtune.privacy import private_training

        private = private_training(model, cfg, len(task.train), args)
        trainer_class = private.trainer_class(trainer_class, PadCollator(tokenizer.pad_token_id))
    built = trainer_class(
        model=model,
        args=args,
        train_dataset=task.train,
        eval_dataset=task.eval if args.eval_strategy != "no" else None,
        # held-out batches are packed too: Trainer's eval_loss is the plain mean of the batch losses either way
        data_collator=PackCollator(tokenizer.pad_token_id) if packing else PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    facts = {
        "train_tokens_per_epoch": sum(len(r["input_ids"]) for r in task.train),
        "packing": packing,
        "chunked_loss": lm_loss is not None,
        "fused_loss": lm_loss is not None and t.fused_loss and fusable_head(loss_parts(model)[1]),
    }

    def finish() -> dict[str, Any]:
        if private is None:
            return {}
        private.hooks.remove_hooks()  # evaluation and saving see the plain model again
        return {"privacy": private.privacy.facts()}

    return Built(built, facts, finish, autocast_adapters=bool(args.bf16))


def _ewc(model: Any, task: Task, tokenizer: Any, cfg: RunConfig, echo: Any) -> Any:
    """Elastic weight consolidation's penalty (None when ``continual.ewc_weight`` is 0)."""
    c = cfg.continual
    if not c.ewc_weight:
        return None
    regular = task.extra["regular"]
    fisher = fisher_diagonal(model, regular[: c.ewc_samples], tokenizer.pad_token_id)
    echo(f"EWC: Fisher information from {min(len(regular), c.ewc_samples)} reference rows, weight {c.ewc_weight}")
    return ewc_penalty(model, fisher, c.ewc_weight)


def measures(model: Any, tokenizer: Any, encoder: Encoder, task: Task, cfg: RunConfig, tuned: bool) -> tuple:
    """Perplexity of the held-out answers and the generation metrics (BLEU, ROUGE, ...)."""
    e = cfg.eval
    result, predictions = evaluate_model(model, tokenizer, encoder, task.held_out, e.metrics, e.max_samples,
                                         e.max_new_tokens, e.batch_size, encoded=task.eval, stride=e.stride,
                                         owner=task.extra["eval_owner"])  # fmt: skip
    if e.checks and predictions:
        result["checks"] = answer_checks(e.checks, predictions, task.held_out)
    return result, predictions


def _generation_scores(model: Any, tokenizer: Any, task: Task, cfg: RunConfig) -> dict[str, float]:
    """The generation metrics on ``eval.generate_samples`` held-out rows, as flat numbers for the log."""
    e = cfg.eval
    wanted = [m for m in e.metrics if m != "perplexity"]
    result, _ = evaluate_model(model, tokenizer, task.extra["encoder"], task.held_out, wanted, e.generate_samples,
                               e.max_new_tokens, e.batch_size)  # fmt: skip
    return flat_scores(result)


def flat_scores(result: dict[str, Any]) -> dict[str, float]:
    """``{"bleu": {"bleu": .4, ...}, "rouge": {...}}`` -> ``{"bleu": .4, "rouge1": ..., "rougeL": ...}``."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, (int, float)) and key != "eval_time_s":
            flat[key] = value
        elif key == "bleu":
            flat["bleu"] = value["bleu"]
        elif key in ("rouge", "chrf"):
            flat.update(value)
    return flat


OBJECTIVE = Objective(name="sft", prepare=prepare, trainer=trainer, measures=measures, tune=tune)
