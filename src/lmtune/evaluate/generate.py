"""Batched greedy decoding with left padding, stopping at EOS or max_new_tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.data.collate import left_pad

# the model's generation_config may hold sampling settings; greedy decoding switches them off
GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@dataclass(frozen=True)
class Generation:
    text: str
    stopped: bool  # ended with the end-of-sequence token, not at max_new_tokens
    new_tokens: int


def generate(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int = 128, batch_size: int = 16
) -> list[Generation]:
    """Greedy answers for tokenised prompts, in the order given."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    # Similar lengths in one batch waste less compute on left padding.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Generation] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(model.device) for k, v in left_pad([prompts[i] for i in idx], pad).items()}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, **GREEDY)
            for row, i in zip(out[:, batch["input_ids"].shape[1] :].tolist(), idx, strict=True):
                results[i] = _decode(tokenizer, row, eos, pad)
    model.train(was_training)
    return [results[i] for i in range(len(prompts))]


def _decode(tokenizer: Any, new: list[int], eos: int, pad: int) -> Generation:
    stopped = eos in new
    if stopped:
        new = new[: new.index(eos)]
    elif pad != eos:
        new = [t for t in new if t != pad]
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    return Generation(text, stopped, len(new) + int(stopped))
