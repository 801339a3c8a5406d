"""A few real training steps on the run's own model and data, before the run: how long, how much memory.

The first step takes the longest examples (an out-of-memory shows at step 1, not step 120); for every
batch size the planner considers, the step's peak resident memory is measured (``VmHWM``) and the
activation bytes it keeps for backward are counted exactly, with autograd's saved-tensor hooks; the
time per batch position comes from a few timed steps on batches drawn the way training draws them. The model's
weights and the random state are left as they were.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from lmtune.loss import FUSED_CHUNK
from lmtune.plan.memory import peak_rss_bytes, reset_peak, rss_bytes
from lmtune.speed.allocator import release_free_memory

TIMED_STEPS = 8
"""Steps timed after an untimed first one. One step's time per token varies by ~10% on a shared 2-core
machine; with five timed, the planned time of the same E2E config ranged from 355 to 522 s across processes."""
AFTER_STEP_EVERY = 2
"""The run's memory trim follows every other probe step (the first included): in training it fired after
22 of 67 steps of the demo, 68 of 125 of the E2E defaults and 30 of 32 of full fine-tuning, and its cost is
paid by the step after it (the pages it handed back are faulted in again). A probe trimming after every step
planned the demo 16-27% over its run."""


@dataclass
class StepFacts:
    activations: dict[int, int] = field(default_factory=dict)
    """Bytes kept for backward by one step on the longest examples, per batch size."""
    step_peak: dict[int, int] = field(default_factory=dict)
    """Resident memory one step on the longest examples added at its peak (forward and backward, gradients
    included), per batch size, over the memory before the first probe step: read on the largest batch, scaled
    by the kept activations for the others; empty where it cannot be read."""
    logits: dict[int, int] = field(default_factory=dict)
    """Bytes of the loss's largest chunk of float32 logits and its softmax (alive during a step), per batch size."""
    seconds_per_token: float = 0.0
    """Forward and backward, per position of the collated batch (examples' tokens plus the padding or filler the
    collator adds), timed between optimizer steps as in training."""
    optimizer_seconds: float = 0.0
    """Gradient clipping and one step of the run's own optimizer over the model's trainable weights."""
    eval_seconds_per_token: float = 0.0


def longest_first(rows: list[dict[str, list[int]]], n: int) -> list[dict[str, list[int]]]:
    return sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True)[:n]


def probe_steps(
    model: Any,
    loss: Any,
    collate: Any,
    rows: list,
    eval_rows: list,
    batch_sizes: list[int],
    args: Any,
    seed: int,
    after_step: Any = None,
) -> StepFacts:
    """Measure activations per batch size (longest examples) and seconds per batch position (forward + backward)."""
    import torch

    facts = StepFacts()
    base = _settled_rss()
    rng_state = torch.random.get_rng_state()
    autocast = torch.autocast(_device(model), dtype=torch.bfloat16) if args.bf16 else nullcontext()
    was_training = model.training
    model.train()
    try:
        for b in sorted(batch_sizes, reverse=True):  # the largest first: an out-of-memory shows now
            batch = _to(collate(longest_first(rows, b)), model)
            facts.activations[b] = _saved_bytes(lambda batch=batch: _loss(loss, batch, autocast), model)
            if b == max(batch_sizes):  # once more, measured: the first step also set up kernels and the allocator
                _settled_rss()
                if reset_peak():
                    _saved_bytes(lambda batch=batch: _loss(loss, batch, autocast), model)
                    facts.step_peak[b] = peak_rss_bytes() - base
            del batch
            _settled_rss()
        if facts.step_peak:
            # the peak is read once, on the largest batch: read again after it, what the allocator kept makes
            # smaller batches look smaller or larger by tens of MB; the kept activations scale exactly
            largest = max(batch_sizes)
            for b in batch_sizes:
                facts.step_peak[b] = (
                    facts.step_peak[largest] * facts.activations[b] // max(facts.activations[largest], 1)
                )
        vocab = model.get_output_embeddings().weight.shape[0]
        labelled = max(sum(1 for t in r["labels"][1:] if t != -100) for r in longest_first(rows, 1))
        facts.logits = {b: 2 * 4 * vocab * min(FUSED_CHUNK, labelled * b) for b in batch_sizes}
        draw = random.Random(seed)
        b = max(batch_sizes)
        samples = [draw.sample(rows, min(b, len(rows))) for _ in range(TIMED_STEPS + 1)]
        timed = time_steps(model, loss, collate, samples, autocast, args, after_step)
        facts.seconds_per_token, facts.optimizer_seconds = timed
        if eval_rows:
            sample = draw.sample(eval_rows, min(b, len(eval_rows)))
            batch = _to(collate(sample), model)
            with torch.no_grad():
                start = time.perf_counter()
                _loss(loss, batch, autocast)
                facts.eval_seconds_per_token = (time.perf_counter() - start) / _tokens(sample)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        torch.random.set_rng_state(rng_state)
    return facts


def _settled_rss() -> int:
    release_free_memory()
    return rss_bytes()


def _tokens(rows: list[dict[str, list[int]]]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def positions(batch: dict[str, Any]) -> int:
    """Positions a forward pass computes for ``batch``: its rows times their width, padding and filler included."""
    return int(batch["input_ids"].numel())


def run_positions(collate: Any, rows: list, batch: int, micro_batches: int, seed: int, most: int = 256) -> int:
    """Positions the run's ``micro_batches`` batches of ``batch`` examples will compute: batches drawn as an
    epoch draws them (shuffled, then cut), up to ``most`` of them collated, the rest at their mean.

    Padding (or a packed row's filler) depends on which examples meet in a batch: for the E2E rows a batch of
    8 computes 10-25% more positions than its examples' tokens, so the run's total is counted, not assumed."""
    if not rows or micro_batches <= 0:
        return 0
    draw = random.Random(seed)
    counted, total = 0, 0
    while counted < min(micro_batches, most):
        order = draw.sample(rows, len(rows))
        for start in range(0, len(order), batch):
            if counted == min(micro_batches, most):
                break
            total, counted = total + positions(collate(order[start : start + batch])), counted + 1
    return round(total * micro_batches / max(counted, 1))


def _loss(loss: Any, batch: dict[str, Any], autocast: Any) -> Any:
    with autocast:
        return loss(batch)


def _saved_bytes(forward: Any, model: Any) -> int:
    """Bytes autograd keeps for backward during ``forward()`` (parameters excluded); backward then frees them."""
    import torch

    params = {p.data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: Any) -> Any:
        ptr = t.data_ptr()
        if ptr not in params:
            kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = forward()
    value.backward()
    model.zero_grad(set_to_none=True)
    return sum(kept.values())


def _device(model: Any) -> str:
    return next(model.parameters()).device.type


def _to(batch: dict[str, Any], model: Any) -> dict[str, Any]:
    device = next(model.parameters()).device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def time_steps(
    model: Any, loss: Any, collate: Any, samples: list, autocast: Any, args: Any, after_step: Any = None
) -> tuple[float, float]:
    """(seconds per batch position of forward and backward, seconds per clip, optimizer step and ``after_step()``)
    over ``samples[1:]``; ``after_step`` is what the run does after a step (its memory trim), called after
    every ``AFTER_STEP_EVERY``-th.

    Timed as Trainer runs them, with an optimizer step between batches: an optimizer step over all the
    weights leaves the caches and the allocator colder, and the next forward and backward pay for it (in
    full fine-tuning, Trainer's passes took 7.5 ms per token where back-to-back ones had taken 5.1).
    ``samples[0]`` is not timed: its step creates the optimizer's state, which training does once.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = still_optimizer(params, args)
    passes = steps = 0.0
    tokens = 0
    try:
        for i, sample in enumerate(samples):
            batch = _to(collate(sample), model)
            start = time.perf_counter()
            _loss(loss, batch, autocast).backward()
            middle = time.perf_counter()
            norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm or float("inf"))
            if torch.isfinite(norm):  # at learning rate 0 a non-finite gradient would still reach the weights
                optimizer.step()
            model.zero_grad(set_to_none=True)
            if after_step is not None and i % AFTER_STEP_EVERY == 0:
                after_step()
            if i:  # per position of the batch: padding costs what a token costs, and the plan counts the run's
                passes, steps = passes + middle - start, steps + time.perf_counter() - middle
                tokens += positions(batch)
            del batch
    finally:
        del optimizer
        model.zero_grad(set_to_none=True)
        release_free_memory()
    timed = max(len(samples) - 1, 1)
    return passes / max(tokens, 1), steps / timed


def still_optimizer(params: list, args: Any) -> Any:
    """Trainer's own optimizer for ``args``, at learning rate 0 and no weight decay: each step does all
    of the run's optimizer work and leaves the weights exactly as they were (``w - 0 * update``)."""
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    return cls([{"params": params, "weight_decay": 0.0}], **{**kwargs, "lr": 0.0})
