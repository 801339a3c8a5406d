"""Dynamic padding: each batch is padded to its own longest example, not to max_length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.data.encode import IGNORE


@dataclass
class PadCollator:
    """Right-pads ``input_ids`` / ``labels`` of a batch and builds the attention mask.

    Padding gets label -100 by position, never by token id, so an EOS that is also
    the pad token is still trained on where it ends an answer.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f.get("labels", f["input_ids"])) + [IGNORE] * pad)
            mask.append([1] * n + [0] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def left_pad(prompts: list[list[int]], pad_token_id: int) -> dict[str, Any]:
    """Left-padded prompts for batched generation (new tokens follow the last real token)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = [[pad_token_id] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}
