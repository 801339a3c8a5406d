"""The Trainer callbacks every objective's run shares: the JSONL log and the guards.

They are plain ``TrainerCallback`` objects, so they work the same on lmtune's supervised Trainer and on
TRL's trainers (which subclass ``Trainer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lmtune.checkpoints import latest_checkpoint
from lmtune.guards import gradients_finite, non_finite_stop
from lmtune.launch import ranks
from lmtune.speed.casts import adapter_input_casts


class JsonlLog(TrainerCallback):
    """Every logged dict (loss, learning rate, grad norm, eval loss, TRL's rewards/* and logps/*) as one JSON
    line in the run folder.  ``perplexity``: the eval loss is a language-model loss, so its exp is logged too."""

    def __init__(self, path: Path, perplexity: bool = True):
        self.path, self.perplexity = path, perplexity

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            write_log_line(self.path, state, logs, self.perplexity)


class GenerationDuringTraining(TrainerCallback):
    """Generation metrics on a small held-out sample every N evaluations (``eval.generate_every``)."""

    def __init__(self, path: Path, every: int, score: Callable[[Any], dict[str, float]]):
        self.path, self.every, self.score, self.evaluations = path, every, score, 0

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.evaluations += 1
        if self.evaluations % self.every or not state.is_world_process_zero:
            return
        with adapter_input_casts(model, enabled=True):  # generation runs outside autocast
            scores = self.score(model)  # generation puts the model back in training mode itself
        write_log_line(self.path, state, {f"gen_{k}": v for k, v in scores.items()})


class Guard(TrainerCallback):
    """Stops on a non-finite gradient; turns a Ctrl-C into "save a checkpoint, then stop"."""

    def __init__(self, stop_requested: Any):
        self.stop_requested = stop_requested

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        # fp16's loss scaler expects overflowing gradients now and then: it skips those steps itself
        if not args.fp16 and not gradients_finite(model):
            raise non_finite_stop(state.global_step + 1, "gradient", args.learning_rate, latest_name(args))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a Ctrl-C seen by one rank stops every rank after the same step (they save one checkpoint together)
        if ranks.any_rank(self.stop_requested.is_set()):
            self.stop_requested.set()
            control.should_save = True
            control.should_training_stop = True


def latest_name(args: Any) -> str | None:
    latest = latest_checkpoint(Path(args.output_dir))
    return latest.name if latest else None


def write_log_line(path: Path, state: Any, logs: dict[str, Any], perplexity: bool = True) -> None:
    """One JSON line of the training log; evaluation lines of a language-model loss also get ``eval_perplexity``."""
    line = {"step": state.global_step, "epoch": state.epoch, **logs}
    if perplexity and "eval_loss" in logs:
        line["eval_perplexity"] = math.exp(min(logs["eval_loss"], 700))  # exp overflows past ~709
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
