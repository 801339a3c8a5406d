"""Training with Hugging Face ``Trainer``: the config's arguments, our collator, a JSONL log."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig, training_argument_names
from lmtune.data.collate import PadCollator

TRAIN_LOG = "train_log.jsonl"


def training_arguments(cfg: RunConfig) -> Any:
    """``TrainingArguments`` from the ``training`` section (names unchanged)."""
    from transformers import TrainingArguments

    args = cfg.training.model_dump()
    ratio = args.pop("warmup_ratio")
    if ratio:
        # Transformers 5 dropped warmup_ratio; a warmup_steps value below 1 is read as a ratio.
        args["warmup_steps"] = ratio
    args.setdefault("remove_unused_columns", False)  # our rows hold exactly what the model takes
    args.setdefault("disable_tqdm", not sys.stderr.isatty())  # plain log lines when not on a terminal
    args.setdefault("dataloader_pin_memory", _has_accelerator())
    if "activation_checkpointing" in training_argument_names():
        # Transformers 5 renamed it; the config keeps the name users know.
        args["activation_checkpointing"] = args.pop("gradient_checkpointing")
    args["seed"] = cfg.seed
    args["data_seed"] = args.get("data_seed", cfg.seed)
    return TrainingArguments(**args)


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
) -> dict[str, Any]:
    """Train in place; returns ``train_time_s``, the final loss and token counts."""
    from transformers import Trainer, TrainerCallback

    class JsonlLog(TrainerCallback):
        """Every logged dict (loss, learning rate, grad norm, eval loss) as one JSON line."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    args = training_arguments(cfg)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    class RegularizedTrainer(Trainer):
        """Trainer whose loss gets an extra penalty term (EWC); the one override that pays for itself."""

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            if penalty is None:
                return out
            if return_outputs:
                return out[0] + penalty(), out[1]
            return out + penalty()

    trainer = RegularizedTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[JsonlLog(out / TRAIN_LOG), *(callbacks or [])],
    )
    start = time.perf_counter()
    result = trainer.train()
    elapsed = time.perf_counter() - start
    tokens = sum(len(r["input_ids"]) for r in train_rows)
    return {
        "train_time_s": elapsed,
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "epochs": trainer.state.epoch,
        "train_tokens_per_epoch": tokens,
        "trainer": trainer,
    }
