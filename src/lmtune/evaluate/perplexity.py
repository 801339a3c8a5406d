"""Perplexity: exp of the token-weighted mean negative log-likelihood over labelled tokens.

Rows are scored as given (at most the encoder's ``max_length`` tokens); ``text`` documents
longer than that are scored with a sliding window (`sliding_window_nll`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lmtune.data.collate import PadCollator
from lmtune.data.encode import IGNORE
from lmtune.loss import FUSED_CHUNK, labelled_states, loss_parts


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
    parts = loss_parts(model)  # (decoder, head): logits only where a label is, a chunk at a time
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    was_training = model.training
    model.eval()
    # Sorting by length keeps padding per batch small.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(model.device) for k, v in collate([encoded[i] for i in idx]).items()}
            if not isinstance(parts, str):
                sums, counts = _labelled_nll(*parts, batch)
                for i, n, c in zip(idx, sums.tolist(), counts.tolist(), strict=True):
                    out[i] = (n, c)
                continue
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


# --------------------------------------------------------------------------- sliding window


def sliding_windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` of each window over a sequence longer than the model's window.

    The Transformers documentation's "Perplexity of fixed-length models" convention: windows
    start every ``stride`` tokens and hold up to ``max_length`` tokens; each scores only the
    tokens the previous window did not, with the rest of the window as context.  Every token
    after the first is scored exactly once.  A stride of ``max_length`` or more is taken as
    ``max_length - 1``: consecutive windows then share one token, the last one scored by a window
    and the first context of the next, so no token at a window's start goes unscored.
    """
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: a window needs at least 2 tokens")
    if stride < 1:
        raise ValueError(f"stride={stride}: must be at least 1")
    step = min(stride, max_length - 1)
    windows = []
    begin, scored_to = 0, 1  # token 0 has no context and is never scored
    while scored_to < n_tokens:
        end = min(begin + max_length, n_tokens)
        windows.append((begin, end, scored_to))
        scored_to = end
        begin += step
    return windows


def sliding_window_nll(
    model: Any,
    input_ids: Sequence[int],
    max_length: int,
    stride: int,
    labels: Sequence[int] | None = None,
    batch_size: int = 8,
) -> tuple[float, int]:
    """(summed NLL, scored tokens) of one sequence longer than the model's window.

    Truncating a long document would throw most of it away; scoring it in independent
    chunks would give each chunk's first tokens no context.  Overlapping windows (see
    `sliding_windows`) score every token once, each with up to ``max_length - stride``
    tokens of context.  Positions whose label is -100 are not scored; ``labels`` defaults
    to ``input_ids``.  A sequence of at most ``max_length`` tokens gives exactly what
    `example_nll` gives for it.
    """
    import torch
    import torch.nn.functional as F

    ids = torch.as_tensor(list(input_ids), dtype=torch.long)
    targets = ids if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
    windows = sliding_windows(len(ids), max_length, stride)
    # windows of one length go into a batch together: no padding needed (only the last may be shorter)
    batches: list[list[tuple[int, int, int]]] = []
    for w in windows:
        if batches and len(batches[-1]) < batch_size and batches[-1][0][1] - batches[-1][0][0] == w[1] - w[0]:
            batches[-1].append(w)
        else:
            batches.append([w])
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            x = torch.stack([ids[b:e] for b, e, _ in batch]).to(model.device)  # (B, T)
            y = torch.stack([_window_targets(targets, b, e, first) for b, e, first in batch]).to(model.device)
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
            logits = logits[:, -x.shape[1] :, :][:, :-1].float()  # (B, T-1, V): drop virtual tokens; t predicts t+1
            nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")  # (B, T-1)
            # summed per window as example_nll sums per row: one window gives exactly its result
            total += sum(nll.sum(dim=1).tolist())
            count += int((y != IGNORE).sum())
    model.train(was_training)
    return total, count


def _window_targets(targets: Any, begin: int, end: int, first: int) -> Any:
    """Labels of tokens begin+1 .. end-1, with those a previous window scored set to -100."""
    y = targets[begin + 1 : end].clone()
    y[: first - begin - 1] = IGNORE
    return y


def _labelled_nll(decoder: Any, head: Any, batch: dict[str, Any], chunk_size: int = FUSED_CHUNK) -> tuple[Any, Any]:
    """(summed NLL, scored tokens) per row, running the LM head only on labelled positions.

    The plain path keeps (batch, length, vocab) float32 logits and their log-softmax: with a
    49,152-token vocabulary, 16 x 128 tokens are 400 MB each, the peak memory of a whole run.
    """
    import torch
    import torch.nn.functional as F

    states, wanted, keep = labelled_states(decoder, batch)
    nll = torch.cat(
        [
            F.cross_entropy(head(states[k : k + chunk_size]).float(), wanted[k : k + chunk_size], reduction="none")
            for k in range(0, len(wanted), chunk_size)
        ]
        or [states.new_zeros(0, dtype=torch.float32)]
    )
    rows = keep.nonzero()[:, 0]  # the row of each labelled position, in the same (row-major) order
    sums = torch.zeros(keep.shape[0], dtype=torch.float64, device=nll.device).index_add_(0, rows, nll.double())
    return sums, keep.sum(dim=1)
