"""Training on a Hugging Face ``Trainer`` (lmtune's supervised one or TRL's): the config's arguments, the guards,
the checkpoint commit and the facts a run records."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lmtune.checkpoints import commit_checkpoint, rotate_checkpoints
from lmtune.config import RunConfig, training_argument_names
from lmtune.data.collate import packed_matches_alone
from lmtune.guards import Interrupted, ctrl_c_requests_stop, is_out_of_memory, non_finite_stop, out_of_memory
from lmtune.launch import ranks
from lmtune.loss import causal_lm_loss, loss_parts, matches_model_loss
from lmtune.run_folder import TRAIN_LOG
from lmtune.speed.allocator import trim_callback
from lmtune.speed.casts import adapter_input_casts

logger = logging.getLogger(__name__)

AUTO_GLOBAL_BATCH = 8
"""``per_device_train_batch_size: auto`` keeps this many examples per optimizer step (times the accumulation)."""
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
    # Trainer would delete older checkpoints before lmtune commits the new one; lmtune rotates after committing
    args["save_total_limit"] = None
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


def guarded(trainer_class: type, keep_checkpoints: int | None) -> type:
    """``trainer_class`` (lmtune's supervised Trainer or a TRL trainer) with lmtune's checkpoint commit and the
    non-finite-loss stop.

    Trainer deletes older checkpoints itself before lmtune would have committed the new one, so its own
    rotation is off (``save_total_limit`` is None in the arguments) and lmtune rotates after committing.
    """

    from lmtune.callbacks import latest_name  # transformers loads with the callbacks, when a run trains

    class Guarded(trainer_class):
        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            loss = super().training_step(*args, **kwargs)
            if not self.args.fp16 and not bool(loss.isfinite()):
                raise non_finite_stop(self.state.global_step + 1, "loss", self.args.learning_rate,
                                      latest_name(self.args))  # fmt: skip
            return loss

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank has written its part (e.g. its RNG state)
            if self.is_world_process_zero():
                run_dir = Path(self._get_output_dir(trial))
                commit_checkpoint(run_dir / f"checkpoint-{self.state.global_step}", self.state.global_step)
                rotate_checkpoints(run_dir, keep_checkpoints, self.state.best_model_checkpoint)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{trainer_class.__name__}"
    return Guarded


def shared_callbacks(cfg: RunConfig, language_model_loss: bool = True) -> list[Any]:
    """The callbacks of every run: the JSONL log, early stopping (when asked for), the memory trims."""
    from transformers import EarlyStoppingCallback

    from lmtune.callbacks import JsonlLog

    t = cfg.training
    found = [JsonlLog(Path(t.output_dir) / TRAIN_LOG, perplexity=language_model_loss)]
    if t.early_stopping_patience:
        found.append(EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold))
    if t.trim_memory and (trims := trim_callback()):
        found.append(trims)
    return found


def fit(trainer: Any, resume_from: Path | None = None, autocast_adapters: bool = False) -> dict[str, Any]:
    """``trainer.train()`` under lmtune's guards; returns the facts of the run every objective records.

    ``resume_from`` is a committed checkpoint: optimizer, scheduler, RNG states and the place in the data
    continue from there.

    Raises:
        TrainingStopped: a non-finite loss or gradient, or out of memory.
        Interrupted: Ctrl-C; a checkpoint of the last finished step was saved first.
    """
    from lmtune.callbacks import Guard

    out = Path(trainer.args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ctrl_c_requests_stop() as stop_requested:
        trainer.add_callback(Guard(stop_requested))
        try:
            # under autocast the adapters take the bfloat16 input as it is (lmtune.speed.casts)
            with adapter_input_casts(trainer.model, enabled=not autocast_adapters):
                result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except Exception as e:
            if is_out_of_memory(e):
                raise out_of_memory(trainer.state.global_step + 1, e) from e
            raise
    elapsed = time.perf_counter() - start
    if stop_requested.is_set():
        step = trainer.state.global_step
        raise Interrupted(
            f"interrupted: checkpoint-{step} (step {step} of {trainer.state.max_steps}) saved in {out}; "
            "run the same command again to resume from it"
        )
    trims = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "trims")), None)
    return {
        "train_time_s": elapsed,
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "epochs": trainer.state.epoch,
        "bf16": bool(trainer.args.bf16),
        "memory_trims": trims.trims if trims else 0,
        "memory_trim_checks": trims.checks if trims else 0,
        "world_size": trainer.args.world_size,
        **early_stopping_facts(trainer),
    }


def total_steps(n_train: int, cfg: RunConfig) -> int:
    """Optimizer steps the run will take (as Trainer counts them, each process taking its share of a batch)."""
    t = cfg.training
    if t.max_steps > 0:
        return t.max_steps
    batch = t.per_device_train_batch_size
    per_step = (AUTO_GLOBAL_BATCH if batch == "auto" else batch) * ranks.world_size()  # auto keeps this global batch
    batches = math.ceil(n_train / per_step)
    per_epoch = max(batches // t.gradient_accumulation_steps, 1)
    return math.ceil(per_epoch * t.num_train_epochs)


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
