"""How fast a model answers: greedy tokens per second and time to the first token, several models timed in turns.

Each model generates for the same left-padded batch of prompts, every prompt the same number of new tokens
(the end of the answer is suppressed until then, so a model that stops early is not counted faster).  The
models take turns (A B A B ...) and the median of the repeats is kept, so a slow spell of the machine falls on
all of them alike: the ratio is what a reader can trust on a shared CPU.  ``generate`` is transformers' own,
with its KV cache, as people serve the model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from lmtune.data.collate import left_pad
from lmtune.evaluate.generate import GREEDY


def generation_speed(models: dict[str, Any], prompts: Sequence[Sequence[int]], pad_token_id: int,
                     new_tokens: int, repeats: int = 3) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{name: {"tokens_per_s", "ttft_s"}}``: tokens/s over the whole batch (prompts x ``new_tokens`` over the
    median time of one full generation) and time to first token (median time of a one-token generation: the
    prefill of the whole batch and the first step)."""
    import torch

    batch = left_pad([list(p) for p in prompts], pad_token_id)
    times: dict[str, dict[str, list[float]]] = {name: {"full": [], "first": []} for name in models}
    was_training = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    try:
        with torch.inference_mode():
            for model in models.values():  # warm-up: first-call allocations and kernel choices
                _timed(model, batch, pad_token_id, 2)
            for _ in range(repeats):
                for name, model in models.items():
                    times[name]["first"].append(_timed(model, batch, pad_token_id, 1))
                    times[name]["full"].append(_timed(model, batch, pad_token_id, new_tokens))
    finally:
        for name, model in models.items():
            model.train(was_training[name])
    return {
        name: {
            "tokens_per_s": len(prompts) * new_tokens / statistics.median(t["full"]),
            "ttft_s": statistics.median(t["first"]),
        }
        for name, t in times.items()
    }


def _timed(model: Any, batch: dict[str, Any], pad_token_id: int, new_tokens: int) -> float:
    inputs = {k: v.to(model.device) for k, v in batch.items()}
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_token_id, **GREEDY)
    return time.perf_counter() - start


def weight_bytes(model: Any) -> int:
    """Bytes of the model's weights as saved (tied tensors once): a safetensors file's size without its header."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
