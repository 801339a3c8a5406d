"""``lmtune plan``: a run's peak memory and training time, predicted before it starts.

The prediction runs the run's own model (same dtype, method, speed levers) on its own data: activation
memory is counted on the longest examples for each batch size considered, the time per batch position
(padding included) and per optimizer step is measured on a few steps and multiplied out over the positions
the run's own batches will compute, and the named parts are added up. ``lmtune train`` prints
the same plan before training, and resolves ``per_device_train_batch_size: auto`` with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lmtune.config import RunConfig
from lmtune.errors import ConfigError
from lmtune.launch import ranks
from lmtune.loss import FUSED_CHUNK
from lmtune.plan.memory import MB, available_bytes, parameter_bytes, rss_bytes
from lmtune.plan.probe import StepFacts, probe_steps, run_positions
from lmtune.speed.allocator import TRIM_GROWTH, release_free_memory
from lmtune.train import AUTO_GLOBAL_BATCH, chunked_loss, total_steps, training_arguments, use_packing

ACTIVATION_OVERHEAD = 2.0
"""Where the peak of a step cannot be read (no ``/proc/self/clear_refs``): resident memory per byte autograd
keeps for backward, as backward allocates about as much again while the kept tensors are freed.
Calibrated on one run (E2E, LoRA, batch 8, this 2-core machine)."""


@dataclass
class Plan:
    batch: int
    accumulation: int
    parts: dict[str, int]
    """Named parts, in bytes: the peak is the first three plus the larger of a training step (gradients,
    activations and logits) and evaluation (it runs between steps, when none of those are kept), plus the
    allocator's slack."""
    peak: int
    train_seconds: float
    steps: int
    tokens: int
    budget: int | None = None
    candidates: dict[int, int] = field(default_factory=dict)
    """Predicted peak per batch size considered."""

    def table(self) -> str:
        lines = [f"plan: batch {self.batch} x accumulation {self.accumulation}, {self.steps} steps, "
                 f"{self.tokens:,} training tokens"]  # fmt: skip
        lines += [f"  {name:<28} {size / MB:9,.0f} MB" for name, size in self.parts.items()]
        lines.append(f"  {'predicted peak memory':<28} {self.peak / MB:9,.0f} MB")
        lines.append(f"  {'predicted training time':<28} {self.train_seconds:9,.0f} s")
        if self.budget:
            lines.append(f"  {'memory budget':<28} {self.budget / MB:9,.0f} MB")
        if len(self.candidates) > 1:
            sizes = ", ".join(f"{b}: {peak / MB:,.0f} MB" for b, peak in self.candidates.items())
            lines.append(f"  predicted peak per batch size: {sizes}")
        return "\n".join(lines)

    def facts(self) -> dict[str, Any]:
        return {"batch": self.batch, "gradient_accumulation_steps": self.accumulation,
                "predicted_peak_mb": self.peak / MB, "predicted_train_s": self.train_seconds,
                "parts_mb": {k: v / MB for k, v in self.parts.items()}}  # fmt: skip


def batch_sizes(cfg: RunConfig) -> list[int]:
    """The per-device batch sizes to consider: the configured one, or for ``auto`` the divisors of the global batch."""
    t = cfg.training
    if t.per_device_train_batch_size != "auto":
        return [t.per_device_train_batch_size]
    total = AUTO_GLOBAL_BATCH * t.gradient_accumulation_steps
    return [b for b in (8, 4, 2, 1) if total % b == 0]


def make_plan(
    model: Any, tokenizer: Any, train_rows: list, eval_rows: list, cfg: RunConfig, budget: int | None = None
) -> Plan:
    """Probe the model on the run's data and predict the peak memory and training time."""
    from lmtune.data.collate import PackCollator, PadCollator

    sizes = batch_sizes(cfg)
    auto = cfg.training.per_device_train_batch_size == "auto"
    resolved = with_batch(cfg, max(sizes), cfg.training.gradient_accumulation_steps)
    args = training_arguments(resolved)
    lm_loss = chunked_loss(model, args, fused=cfg.training.fused_loss) if cfg.training.chunked_loss else None
    loss = (lambda b: lm_loss(b, None)) if lm_loss else (lambda b: model(**{**b, "use_cache": False}).loss)
    collate = PackCollator(tokenizer.pad_token_id) if cfg.training.packing and use_packing(model) else \
        PadCollator(tokenizer.pad_token_id)  # fmt: skip
    release_free_memory()
    base = rss_bytes()
    # the run's memory trim, on a share of the timed steps (probe.AFTER_STEP_EVERY): a probe that trimmed only
    # when its own few steps had crept timed the E2E defaults 15-20% faster than training then ran
    after_step = release_free_memory if cfg.training.trim_memory else None
    facts = probe_steps(model, loss, collate, train_rows, eval_rows, sizes, args, cfg.seed, after_step)
    params = parameter_bytes(model, str(args.optim))
    fixed = {"libraries and runtime": base - params["weights"], "weights": params["weights"],
             "optimizer state": params["optimizer"]}  # fmt: skip
    evaluation = _evaluation_bytes(model, eval_rows, cfg)
    steps = {b: _step_bytes(facts, b, params["gradients"]) for b in sizes}
    # evaluation runs between training steps: the optimizer state stays, activations and gradients are gone
    live = {b: sum(fixed.values()) + max(steps[b], evaluation) for b in sizes}
    peaks = {b: live[b] + _slack(live[b]) for b in sizes}
    if budget is None and auto:
        budget = base + available_bytes()
    fitting = [b for b in sizes if budget is None or peaks[b] <= budget]
    if not fitting:
        raise ConfigError(
            f"training.per_device_train_batch_size: even batch {min(sizes)} needs ~{peaks[min(sizes)] / MB:,.0f} MB, "
            f"over the memory budget of {budget / MB:,.0f} MB"
        )
    batch = max(fitting) if auto else sizes[0]
    accumulation = AUTO_GLOBAL_BATCH * cfg.training.gradient_accumulation_steps // batch if auto else \
        cfg.training.gradient_accumulation_steps  # fmt: skip
    final = with_batch(cfg, batch, accumulation)
    parts = {**fixed, **_step_parts(facts, batch, params["gradients"]), "evaluation and generation": evaluation,
             "allocator slack": _slack(live[batch])}  # fmt: skip
    steps, tokens = _steps_and_tokens(train_rows, final)
    computed = run_positions(collate, train_rows, batch, steps * accumulation, cfg.seed)
    seconds = computed * facts.seconds_per_token + steps * facts.optimizer_seconds
    seconds += _evaluations(final, steps) * sum(len(r["input_ids"]) for r in eval_rows) * facts.eval_seconds_per_token
    return Plan(batch, accumulation, parts, peaks[batch], seconds, steps, tokens, budget, peaks)


def with_batch(cfg: RunConfig, batch: int, accumulation: int) -> RunConfig:
    """``cfg`` with the per-device batch and accumulation set (what ``auto`` resolves to)."""
    training = cfg.training.model_copy(
        update={"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation}
    )
    return cfg.model_copy(update={"training": training})


def _slack(live: int) -> int:
    """What the allocator holds freed and not yet handed back over ``live`` bytes: the memory trim lets resident memory
    grow ``TRIM_GROWTH`` above the first step's before it trims, and the demo's training crept from 2,607 to
    2,902 MB (+11%) with it; without the trim the E2E defaults crept about as far in 60 steps (+12%)."""
    return round(live * TRIM_GROWTH)


def _step_bytes(facts: StepFacts, batch: int, gradients: int) -> int:
    """What a training step adds at its peak: measured where the probe could read the peak, else estimated."""
    return sum(_step_parts(facts, batch, gradients).values())


def _step_parts(facts: StepFacts, batch: int, gradients: int) -> dict[str, int]:
    logits = facts.logits[batch]
    if batch in facts.step_peak:  # the measured peak holds all three: name each, the activations as the rest
        activations = max(facts.step_peak[batch] - gradients - logits, 0)
        return {"gradients": gradients, "activations (longest batch)": activations, "logits (one loss chunk)": logits}
    return {"gradients": gradients, "activations (longest batch)": int(ACTIVATION_OVERHEAD * facts.activations[batch]),
            "logits (one loss chunk)": logits}  # fmt: skip


def _evaluation_bytes(model: Any, eval_rows: list, cfg: RunConfig) -> int:
    """The KV cache of one generation batch and one loss chunk of float32 logits (evaluation runs without grad)."""
    c = model.config
    layers = getattr(c, "num_hidden_layers", 0)
    heads = getattr(c, "num_key_value_heads", None) or getattr(c, "num_attention_heads", 0)
    head_dim = getattr(c, "head_dim", None) or getattr(c, "hidden_size", 0) // max(
        getattr(c, "num_attention_heads", 1), 1
    )
    longest = max((len(r["input_ids"]) for r in eval_rows), default=0) + cfg.eval.max_new_tokens
    element = next(model.parameters()).element_size()
    kv = 2 * layers * heads * head_dim * longest * cfg.eval.batch_size * element
    vocab = model.get_output_embeddings().weight.shape[0]
    labelled = sum(sorted((len(r["input_ids"]) for r in eval_rows), reverse=True)[: cfg.eval.batch_size])
    return kv + 2 * 4 * vocab * min(FUSED_CHUNK, labelled)


def _steps_and_tokens(train_rows: list, cfg: RunConfig) -> tuple[int, int]:
    steps = total_steps(len(train_rows), cfg)
    per_epoch = sum(len(r["input_ids"]) for r in train_rows) / ranks.world_size()  # this process's share
    t = cfg.training
    if t.max_steps > 0:
        examples = steps * t.per_device_train_batch_size * t.gradient_accumulation_steps
        return steps, int(per_epoch * ranks.world_size() / max(len(train_rows), 1) * examples)
    return steps, int(per_epoch * t.num_train_epochs)


def _evaluations(cfg: RunConfig, steps: int) -> int:
    t = cfg.training
    if t.eval_strategy == "steps":
        every = t.eval_steps or t.logging_steps
        every = math.ceil(every * steps) if every < 1 else int(every)  # below 1: a fraction of the steps
        return steps // max(every, 1)
    return math.ceil(t.num_train_epochs) if t.eval_strategy == "epoch" else 0
