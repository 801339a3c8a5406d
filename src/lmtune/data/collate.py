"""Batches for training: dynamic padding (each batch padded to its own longest example), or packing."""

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


@dataclass
class PackCollator:
    """Packs the examples of a batch into as few rows as fit: no pad tokens between examples.

    The same examples make an optimizer step as with ``PadCollator``.  Rows hold up to
    ``row_tokens`` tokens (default: the batch's longest example), filled first-fit by decreasing
    length; ``position_ids`` restart at 0 for every example.  A row's unused tail is a filler
    segment of pad tokens with positions of its own and no labels, so every row has the same
    width and no 2-D attention mask is needed.  Capping rows at the longest example keeps the
    cost at or below dynamic padding: never more rows, never wider, and on CPU (no
    variable-length attention kernel) no long rows with a quadratic masked attention product.

    Examples stay apart inside a row: Transformers' mask builder (``masking_utils.create_causal_mask``
    -> ``find_packed_sequence_indices``) reads each restart of ``position_ids`` as a new sequence and
    builds a block-diagonal causal mask for SDPA and eager attention (flash attention reads the same
    ``position_ids`` as variable-length sequences). It only looks when there is no 2-D attention mask
    and no cache, so the batch has no ``attention_mask`` and asks for ``use_cache=False``: with the
    model's default ``use_cache=True`` an empty cache is created first and the examples would attend
    to each other. Each example's first label is -100, so no example is trained to predict its first
    token from the previous example's last one.
    """

    pad_token_id: int = 0
    row_tokens: int | None = None

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        examples = [f for f in features if len(f["input_ids"])]
        capacity = max(self.row_tokens or 0, max(len(f["input_ids"]) for f in examples))
        rows: list[dict[str, list[int]]] = []
        for f in sorted(examples, key=lambda f: -len(f["input_ids"])):
            n = len(f["input_ids"])
            row = next((r for r in rows if len(r["ids"]) + n <= capacity), None)
            if row is None:
                row = {"ids": [], "labels": [], "positions": []}
                rows.append(row)
            row["ids"] += list(f["input_ids"])
            row["labels"] += [IGNORE, *list(f.get("labels", f["input_ids"]))[1:]]
            row["positions"] += range(n)
        width = max(len(r["ids"]) for r in rows)
        for row in rows:  # the filler: a segment of its own, never scored
            fill = width - len(row["ids"])
            row["ids"] += [self.pad_token_id] * fill
            row["labels"] += [IGNORE] * fill
            row["positions"] += range(fill)
        return {
            "input_ids": torch.tensor([r["ids"] for r in rows], dtype=torch.long),  # (rows, width)
            "position_ids": torch.tensor([r["positions"] for r in rows], dtype=torch.long),
            "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
            "use_cache": False,
        }


def left_pad(prompts: list[list[int]], pad_token_id: int) -> dict[str, Any]:
    """Left-padded prompts for batched generation (new tokens follow the last real token)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = [[pad_token_id] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}


def packed_matches_alone(model: Any, lengths: tuple[int, ...] = (6, 4)) -> bool:
    """Whether ``model`` gives packed examples the logits each gets alone (tiny seeded check, eval mode).

    False for attention that ignores the packed ``position_ids`` (the examples would see each other)
    and for position embeddings that do not follow them. Draws from its own generator, so the run's
    random state is untouched.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    param = next(model.parameters())
    rows = [torch.randint(vocab, (n,), generator=g) for n in lengths]
    batch = PackCollator(row_tokens=sum(lengths))([{"input_ids": r.tolist()} for r in rows])  # one row
    packed = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(**{k: v.to(param.device) for k, v in packed.items()}, use_cache=False).logits
            together = logits[0].float()  # (sum of lengths, vocab)
            alone = torch.cat([model(input_ids=r[None].to(param.device), use_cache=False).logits[0] for r in rows])
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)
    tol = 1e-4 if param.dtype == torch.float32 else 2e-2
    alone = alone.float()
    return bool((together - alone).abs().max() <= tol * alone.abs().max().clamp(min=1))
