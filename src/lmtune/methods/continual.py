"""Regularisers against catastrophic forgetting: EWC and replay.

* EWC (Kirkpatrick et al. 2017): before training, estimate how much each
  trainable weight matters to general-domain data (the diagonal of the empirical
  Fisher information, mean of squared gradients); during training, add
  ``λ/2 · Σ F·(θ − θ₀)²`` to the loss so the important weights stay near θ₀.
* Replay: mix general-domain rows into the training data.

No library in the Hugging Face stack ships EWC, so it is written here (~30 lines).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lmtune.data.collate import PadCollator


def fisher_diagonal(model: Any, rows: list[dict[str, Any]], pad_token_id: int, batch_size: int = 4) -> dict[str, Any]:
    """Mean squared gradient of the LM loss for every trainable parameter."""
    collate = PadCollator(pad_token_id)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: p.detach().new_zeros(p.shape) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout while measuring
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch_rows in batches:
        batch = {k: v.to(model.device) for k, v in collate(batch_rows).items()}
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 / len(batches)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return fisher


def ewc_penalty(model: Any, fisher: dict[str, Any], weight: float) -> Callable[[], Any]:
    """A function giving ``weight/2 · Σ F·(θ − θ₀)²`` for the model's current weights (θ₀ = now)."""
    anchors = {n: p.detach().clone() for n, p in model.named_parameters() if n in fisher}
    params = {n: p for n, p in model.named_parameters() if n in fisher}

    def penalty() -> Any:
        total = sum((fisher[n] * (p - anchors[n]) ** 2).sum() for n, p in params.items())
        return weight / 2 * total

    return penalty


def replay_rows(reference: list[dict[str, Any]], n_train: int, fraction: float) -> list[dict[str, Any]]:
    """Reference rows to add so they make up ``fraction`` of the training data (cycled if few)."""
    want = math.ceil(n_train * fraction / (1 - fraction))
    if not reference or want <= 0:
        return []
    return [reference[i % len(reference)] for i in range(want)]
