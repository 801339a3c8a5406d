"""Training with Hugging Face ``Trainer``: the config's arguments, our collator, a JSONL log."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lmtune.checkpoints import commit_checkpoint, latest_checkpoint, rotate_checkpoints
from lmtune.config import RunConfig, training_argument_names
from lmtune.data.collate import PackCollator, PadCollator, packed_matches_alone
from lmtune.guards import (
    Interrupted,
    ctrl_c_requests_stop,
    gradients_finite,
    is_out_of_memory,
    non_finite_stop,
    out_of_memory,
)
from lmtune.launch import ranks
from lmtune.loss import causal_lm_loss, fusable_head, loss_parts, matches_model_loss
from lmtune.speed.allocator import trim_callback
from lmtune.speed.casts import adapter_input_casts

logger = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
EARLY_STOPPING_KEYS = ("early_stopping_patience", "early_stopping_threshold")
LMTUNE_KEYS = (*EARLY_STOPPING_KEYS, "packing", "chunked_loss", "fused_loss", "fused_norm", "fast_dropout", "plan",
               "trim_memory")  # fmt: skip
"""``training`` keys that configure lmtune itself, not TrainingArguments."""


def training_arguments(cfg: RunConfig) -> Any:
    """``TrainingArguments`` from the ``training`` section (names unchanged)."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(cfg))


def training_argument_values(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments of ``TrainingArguments`` (or of a TRL config built on it) for this run."""
    args = cfg.training.model_dump()
    if args["bf16"] == "auto":
        args["bf16"] = mixed_precision_pays(cfg)
    for key in LMTUNE_KEYS:  # EarlyStoppingCallback's and lmtune's own settings, not TrainingArguments
        args.pop(key)
    if cfg.training.early_stopping_patience:
        _keep_best_checkpoint(args)
    ratio = args.pop("warmup_ratio")
    if ratio:
        # Transformers 5 dropped warmup_ratio; a warmup_steps value below 1 is read as a ratio.
        args["warmup_steps"] = ratio
    args.setdefault("remove_unused_columns", False)  # our rows hold exactly what the model takes
    args.setdefault("disable_tqdm", not sys.stderr.isatty())  # plain log lines when not on a terminal
    args.setdefault("dataloader_pin_memory", _has_accelerator())
    if (args.get("bf16") or args.get("fp16")) and not _has_accelerator():
        args.setdefault("use_cpu", True)  # Trainer refuses CPU mixed precision unless told it is on the CPU
    if ranks.distributed():
        distributed_arguments(args, cfg)
    if "activation_checkpointing" in training_argument_names():
        # Transformers 5 renamed it; the config keeps the name users know.
        args["activation_checkpointing"] = args.pop("gradient_checkpointing")
    args["seed"] = cfg.seed
    args["data_seed"] = args.get("data_seed", cfg.seed)
    return args


def distributed_arguments(args: dict[str, Any], cfg: RunConfig) -> None:
    """Several processes: DDP over gloo on a CPU-only host, NCCL on GPUs (Trainer's defaults there).

    Without ``use_cpu`` on a CPU-only host Trainer does not join the processes: each trains its own copy.
    Every parameter lmtune trains gets a gradient in every step, so DDP need not search for unused ones
    (for a PEFT model Trainer would turn that search on, and it costs a pass over the graph per step).
    """
    if not _has_accelerator():
        args.setdefault("use_cpu", True)
        args.setdefault("ddp_backend", "gloo")
    args.setdefault("ddp_find_unused_parameters", False)


def mixed_precision_pays(cfg: RunConfig) -> bool:
    """``training.bf16: auto``: supervised runs whose frozen base is loaded in bfloat16 (``model.dtype: auto``).

    Preference objectives keep float32 adapters' arithmetic: TRL's trainers were measured that way here.
    """
    from lmtune.methods import TRAINS_BASE_WEIGHTS
    from lmtune.models import training_dtype

    trains_base = cfg.method in TRAINS_BASE_WEIGHTS
    return cfg.objective == "sft" and training_dtype(cfg.model.dtype, trains_base) == "bfloat16"


def _keep_best_checkpoint(args: dict[str, Any]) -> None:
    """Early stopping watches eval_loss and reloads the best checkpoint at the end.

    Trainer can only reload a checkpoint saved at an evaluation, so checkpoints follow the
    evaluation schedule (as Axolotl and LLaMA-Factory set it up for their users too).
    """
    args["load_best_model_at_end"] = True
    args["metric_for_best_model"] = "eval_loss"
    args["greater_is_better"] = False
    args["save_strategy"] = args["eval_strategy"]
    if args.get("eval_steps"):
        args["save_steps"] = args["eval_steps"]
    elif args["eval_strategy"] == "steps":
        args["save_steps"] = args["logging_steps"]  # Trainer evaluates every logging_steps then


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def train(
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, list[int]]],
    eval_rows: list[dict[str, list[int]]] | None,
    cfg: RunConfig,
    callbacks: list[Any] | None = None,
    penalty: Any = None,
    generation_score: Callable[[Any], dict[str, float]] | None = None,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train in place; returns ``train_time_s``, the final loss, token counts and early-stopping facts.

    ``generation_score(model)``, when given, runs every ``eval.generate_every`` evaluations
    and its numbers go into the training log as ``gen_*`` keys.  ``resume_from`` is a
    committed checkpoint: optimizer, scheduler, RNG states and the place in the data
    continue from there.

    Raises:
        TrainingStopped: a non-finite loss or gradient, or out of memory.
        Interrupted: Ctrl-C; a checkpoint of the last finished step was saved first.
    """
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

    class JsonlLog(TrainerCallback):
        """Every logged dict (loss, learning rate, grad norm, eval loss) as one JSON line."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                write_log_line(self.path, state, logs)

    class GenerationDuringTraining(TrainerCallback):
        """Generation metrics on a small held-out sample every N evaluations (``eval.generate_every``)."""

        def __init__(self, path: Path, every: int):
            self.path, self.every, self.evaluations = path, every, 0

        def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.evaluations += 1
            if self.evaluations % self.every or not state.is_world_process_zero:
                return
            with adapter_input_casts(model, enabled=True):  # generation runs outside autocast
                scores = generation_score(model)  # generation puts the model back in training mode itself
            write_log_line(self.path, state, {f"gen_{k}": v for k, v in scores.items()})

    class Guard(TrainerCallback):
        """Stops on a non-finite gradient; turns a Ctrl-C into "save a checkpoint, then stop"."""

        def __init__(self, stop_requested: Any):
            self.stop_requested = stop_requested

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            # fp16's loss scaler expects overflowing gradients now and then: it skips those steps itself
            if not args.fp16 and not gradients_finite(model):
                raise non_finite_stop(state.global_step + 1, "gradient", args.learning_rate, _latest(args))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # a Ctrl-C seen by one rank stops every rank after the same step (they save one checkpoint together)
            if ranks.any_rank(self.stop_requested.is_set()):
                self.stop_requested.set()
                control.should_save = True
                control.should_training_stop = True

    args = training_arguments(cfg)
    # Trainer would delete older checkpoints before lmtune commits the new one; lmtune rotates after committing
    keep_checkpoints, args.save_total_limit = args.save_total_limit, None
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = []
    t = cfg.training
    if t.early_stopping_patience:
        extra.append(EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold))
    if generation_score and cfg.eval.generate_every:
        extra.append(GenerationDuringTraining(out / TRAIN_LOG, cfg.eval.generate_every))
    trims = trim_callback() if t.trim_memory else None
    extra += [trims] if trims else []

    packing = t.packing and use_packing(model)
    lm_loss = chunked_loss(model, args, fused=t.fused_loss) if t.chunked_loss else None

    class RegularizedTrainer(Trainer):
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

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            loss = super().training_step(*args, **kwargs)
            if not self.args.fp16 and not bool(loss.isfinite()):
                raise non_finite_stop(self.state.global_step + 1, "loss", self.args.learning_rate, _latest(self.args))
            return loss

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank has written its part (e.g. its RNG state)
            if self.is_world_process_zero():
                run_dir = Path(self._get_output_dir(trial))
                commit_checkpoint(run_dir / f"checkpoint-{self.state.global_step}", self.state.global_step)
                rotate_checkpoints(run_dir, keep_checkpoints, self.state.best_model_checkpoint)

    trainer_class, private = RegularizedTrainer, None
    if cfg.privacy is not None:
        from lmtune.privacy import private_training

        private = private_training(model, cfg, len(train_rows), args)
        trainer_class = private.trainer_class(RegularizedTrainer, PadCollator(tokenizer.pad_token_id))
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None,
        # held-out batches are packed too: Trainer's eval_loss is the plain mean of the batch losses either way
        data_collator=PackCollator(tokenizer.pad_token_id) if packing else PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[JsonlLog(out / TRAIN_LOG), *extra, *(callbacks or [])],
    )
    start = time.perf_counter()
    with ctrl_c_requests_stop() as stop_requested:
        trainer.add_callback(Guard(stop_requested))
        try:
            # under autocast the adapters take the bfloat16 input as it is (lmtune.speed.casts)
            with adapter_input_casts(model, enabled=not args.bf16):
                result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except Exception as e:
            if is_out_of_memory(e):
                raise out_of_memory(trainer.state.global_step + 1, e) from e
            raise
        finally:
            if private:
                private.hooks.remove_hooks()  # evaluation and saving see the plain model again
    elapsed = time.perf_counter() - start
    if stop_requested.is_set():
        step = trainer.state.global_step
        raise Interrupted(
            f"interrupted: checkpoint-{step} (step {step} of {trainer.state.max_steps}) saved in {out}; "
            "run the same command again to resume from it"
        )
    tokens = sum(len(r["input_ids"]) for r in train_rows)
    return {
        "train_time_s": elapsed,
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "epochs": trainer.state.epoch,
        "train_tokens_per_epoch": tokens,
        "packing": packing,
        "chunked_loss": lm_loss is not None,
        "fused_loss": lm_loss is not None and t.fused_loss and fusable_head(loss_parts(model)[1]),
        "bf16": bool(args.bf16),
        "memory_trims": trims.trims if trims else 0,
        "memory_trim_checks": trims.checks if trims else 0,
        "world_size": trainer.args.world_size,
        **early_stopping_facts(trainer),
        **({"privacy": private.privacy.facts()} if private else {}),
        "trainer": trainer,
    }


def _latest(args: Any) -> str | None:
    latest = latest_checkpoint(Path(args.output_dir))
    return latest.name if latest else None


def use_packing(model: Any) -> bool:
    """Whether ``model`` can train on packed batches; when not, a log line says why."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        name = getattr(peft_config.peft_type, "value", peft_config.peft_type)
        logger.info("training.packing is off: %s puts its virtual tokens in front of each batch row", name)
        return False
    if not packed_matches_alone(model):
        logger.warning(
            "training.packing is off: this model's attention or position embeddings do not keep packed "
            "examples apart (checked on a tiny input); batches are padded"
        )
        return False
    return True


def chunked_loss(model: Any, args: Any, fused: bool = False) -> Callable[[dict[str, Any], Any], Any] | None:
    """``loss(inputs, num_items_in_batch)`` on labelled positions only, or None (with a log line why)."""
    parts = loss_parts(model)
    if isinstance(parts, str):
        why = parts
    elif args.label_smoothing_factor:
        why = "label smoothing is Trainer's own loss"
    elif args.world_size > 1 or args.n_gpu > 1 or args.torch_compile:
        why = "the model is wrapped (distributed, DataParallel or torch.compile) and must run its own forward"
    elif not matches_model_loss(model, *parts):
        why = "on a tiny input it did not reproduce the model's own loss"
    else:
        return partial(causal_lm_loss, *parts, fused=fused)
    logger.info("training.chunked_loss is off: %s; the model computes the loss over all positions", why)
    return None


def early_stopping_facts(trainer: Any) -> dict[str, Any]:
    """Which checkpoint the final weights come from, and whether training stopped before its end."""
    state = trainer.state
    best = state.best_model_checkpoint
    if not trainer.args.load_best_model_at_end or not best:
        return {}
    return {
        "best_checkpoint": Path(best).name,
        "best_step": int(Path(best).name.rsplit("-", 1)[-1]),
        "best_eval_loss": state.best_metric,
        "stopped_early": state.global_step < state.max_steps,
    }


def write_log_line(path: Path, state: Any, logs: dict[str, Any]) -> None:
    """One JSON line of the training log; evaluation lines also get ``eval_perplexity``."""
    line = {"step": state.global_step, "epoch": state.epoch, **logs}
    if "eval_loss" in logs:
        line["eval_perplexity"] = math.exp(min(logs["eval_loss"], 700))  # exp overflows past ~709
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
