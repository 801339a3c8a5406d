"""Perplexity: exp of the token-weighted mean negative log-likelihood over labelled tokens."""

from __future__ import annotations

import math
from typing import Any

from lmtune.data.collate import PadCollator


def perplexity(
    model: Any, encoded: list[dict[str, list[int]]], pad_token_id: int, batch_size: int = 8
) -> dict[str, float]:
    """Σ NLL / Σ scored tokens over the whole set, then exp — never a mean of batch means.

    Only positions whose label is not -100 are scored: the answer tokens, or every
    token for ``text`` data.

    Returns:
        ``{"perplexity", "nll", "tokens"}``
    """
    import torch
    import torch.nn.functional as F

    collate = PadCollator(pad_token_id)
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    # Sorting by length keeps padding per batch small.
    ordered = sorted(encoded, key=lambda e: len(e["input_ids"]))
    with torch.inference_mode():
        for start in range(0, len(ordered), batch_size):
            batch = collate(ordered[start : start + batch_size])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # position t predicts token t+1
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]  # (B, T-1, V), (B, T-1)
            nll = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total_nll += nll.item()
            total_tokens += int((labels != -100).sum())
    model.train(was_training)
    mean = total_nll / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": total_tokens}
