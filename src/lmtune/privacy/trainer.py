"""DP-SGD inside ``transformers.Trainer``: what changes in its data loader, optimizer, step, log and checkpoint.

Trainer sees one logical batch per optimizer step (drawn by the Poisson sampler) and runs it in physical
chunks of ``per_device_train_batch_size`` rows; Opacus's hooks record each example's gradient, the
``DPOptimizer`` clips each, sums, adds noise and divides by the expected batch. Trainer's own clipping is
off (it would clip the noised sum again) and its gradient accumulation is 1 (the chunks are the accumulation).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.extras import require
from lmtune.files import atomic_write_json
from lmtune.privacy.engine import (
    Privacy,
    batch_sampler,
    chunks,
    per_example_hooks,
    per_example_loss,
    private_optimizer,
    resolve_privacy,
)

STATE_FILE = "privacy_state.json"
"""In each checkpoint: the accountant's history and the sampler's random state, so a resumed run's
epsilon continues from the steps already taken."""


@dataclass
class PrivateTraining:
    """A private run's settings, its sampler and the per-example gradient hooks (kept alive for the run)."""

    privacy: Privacy
    sampler: Any
    hooks: Any
    seed: int

    def trainer_class(self, base: type, collate: Any) -> type:
        return private_trainer_class(base, self.privacy, collate, self.sampler, self.seed)


def private_training(model: Any, cfg: Any, train_rows: int, args: Any) -> PrivateTraining:
    """Resolve the privacy settings for this run, set ``args`` for DP-SGD and hook the model's adapters."""
    require("privacy", what="privacy: DP-SGD training")
    t = cfg.training
    privacy = resolve_privacy(cfg.privacy, train_rows, t.per_device_train_batch_size, t.gradient_accumulation_steps,
                              t.num_train_epochs, t.max_steps)  # fmt: skip
    private_arguments(args, privacy)
    return PrivateTraining(privacy, batch_sampler(train_rows, privacy, cfg.seed), per_example_hooks(model), cfg.seed)


def private_arguments(args: Any, privacy: Privacy) -> None:
    """TrainingArguments for a private run: no clipping of the sum, one logical batch per step."""
    args.max_grad_norm = 0.0
    args.gradient_accumulation_steps = 1
    args.per_device_train_batch_size = privacy.expected_batch  # what Trainer reports as its batch


def private_trainer_class(base: type, privacy: Privacy, collate: Any, sampler: Any, seed: int) -> type:
    """``base`` (a Trainer class) with DP-SGD's data loader, optimizer, step, epsilon logging and checkpoint state."""
    import torch
    from opacus.optimizers import DPOptimizer

    class PrivateTrainer(base):
        def get_train_dataloader(self) -> Any:
            from torch.utils.data import DataLoader

            # the rows go through as they are: each physical chunk is padded on its own in training_step
            return DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=lambda rows: {"examples": rows})

        def create_optimizer(self, model: Any = None) -> Any:
            optimizer = super().create_optimizer(model)
            if not isinstance(optimizer, DPOptimizer):
                self.optimizer = private_optimizer(optimizer, privacy, seed)
            return self.optimizer

        def dp_optimizer(self) -> Any:
            return getattr(self.optimizer, "optimizer", self.optimizer)  # inside Accelerate's wrapper

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            model.train()
            dp = self.dp_optimizer()
            dp.zero_grad(set_to_none=True)  # Trainer zeroes .grad only; per-example grads and sums live elsewhere
            examples = inputs["examples"]
            parts = chunks(examples, privacy.physical_batch)
            if not parts:  # an empty Poisson batch: the step still adds noise (and counts against epsilon)
                for p in dp.params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                return torch.zeros((), device=self.args.device)
            total = torch.zeros((), device=self.args.device)
            for i, part in enumerate(parts):
                batch = self._prepare_inputs(collate(part))
                with self.accelerator.autocast():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   use_cache=False).logits  # fmt: skip
                losses = per_example_loss(logits, batch["labels"])  # (chunk,)
                del logits
                with warnings.catch_warnings():  # frozen embeddings: no input needs a gradient, as intended here
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    losses.sum().backward()  # the hooks record each example's gradient of its own loss
                total += losses.detach().sum()
                if i < len(parts) - 1:  # BatchMemoryManager's protocol: clip and accumulate, no noise, no step
                    dp.signal_skip_step(do_skip=True)
                    dp.step()
                    dp.zero_grad(set_to_none=True)
            return total / len(examples)

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs or "train_loss" in logs:
                logs["epsilon"] = privacy.epsilon()
            # Trainer's norm would be of the last physical chunk's unclipped sum: neither the step's nor private
            logs.pop("grad_norm", None)
            super().log(logs, *args, **kwargs)

        def _save_rng_state(self, output_dir: str) -> None:
            super()._save_rng_state(output_dir)
            state = {"accountant": privacy.accountant.state_dict(), "sampler": _generator_state(sampler)}
            atomic_write_json(Path(output_dir) / STATE_FILE, state)

        def _load_rng_state(self, checkpoint: str | None) -> None:
            super()._load_rng_state(checkpoint)
            path = Path(checkpoint or "") / STATE_FILE
            if checkpoint and path.is_file():
                state = json.loads(path.read_text())
                privacy.accountant.load_state_dict(_history_tuples(state["accountant"]))
                _set_generator_state(sampler, state["sampler"])

    return PrivateTrainer


def _history_tuples(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "history": [tuple(h) for h in state.get("history", [])]}


def _generator(sampler: Any) -> Any:
    return getattr(sampler, "generator", None) or getattr(getattr(sampler, "sampler", None), "generator", None)


def _generator_state(sampler: Any) -> list[int] | None:
    g = _generator(sampler)
    return g.get_state().tolist() if g is not None else None


def _set_generator_state(sampler: Any, state: list[int] | None) -> None:
    import torch

    g = _generator(sampler)
    if g is not None and state is not None:
        g.set_state(torch.tensor(state, dtype=torch.uint8))
