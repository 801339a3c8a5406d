"""Perplexity: exp of the token-weighted mean negative log-likelihood over labelled tokens."""

from __future__ import annotations

import math
from typing import Any

from lmtune.data.collate import PadCollator


def perplexity(model: Any, encoded: list[dict[str, Any]], pad_token_id: int, batch_size: int = 8) -> dict[str, Any]:
    """Σ NLL / Σ scored tokens over the whole set, then exp — never a mean of batch means.

    Only positions whose label is not -100 are scored: the answer tokens, or every
    token for ``text`` data.

    Returns:
        ``{"perplexity", "nll", "tokens", "per_example": [(nll_sum, tokens), ...]}``;
        ``per_example`` is in the order given, so subsets (tasks) can be scored the same way.
    """
    per_example = example_nll(model, encoded, pad_token_id, batch_size)
    return {**aggregate(per_example), "per_example": per_example}


def aggregate(per_example: list[tuple[float, int]]) -> dict[str, float]:
    total_nll = sum(n for n, _ in per_example)
    total_tokens = sum(t for _, t in per_example)
    mean = total_nll / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": total_tokens}


def example_nll(
    model: Any, encoded: list[dict[str, Any]], pad_token_id: int, batch_size: int
) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of every example."""
    import torch
    import torch.nn.functional as F

    collate = PadCollator(pad_token_id)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    was_training = model.training
    model.eval()
    # Sorting by length keeps padding per batch small.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(model.device) for k, v in collate([encoded[i] for i in idx]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # prompt-learning methods (prompt tuning, P-tuning) put virtual tokens first: drop their positions
            logits = logits[:, -batch["input_ids"].shape[1] :]
            # position t predicts token t+1
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]  # (B, T-1, V), (B, T-1)
            nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T-1)
            counts = (labels != -100).sum(dim=1)
            for i, n, c in zip(idx, nll.sum(dim=1).tolist(), counts.tolist(), strict=True):
                out[i] = (n, c)
    model.train(was_training)
    return out
