"""Depth pruning: drop whole decoder layers, the ones that change their input least on the task's own data.

A layer whose output points the same way as its input adds little: the score of layer i is the angular
distance between the hidden state it reads and the one it writes, arccos(cos(h_in, h_out)) / π, averaged over
every real (unpadded) token of the scored rows, 0 (no change) to 1.  This is the per-layer form of the
angular distance of Gromov et al. 2024 ("The unreasonable ineffectiveness of the deeper layers") and, up to
the arccos, ShortGPT's Block Influence (Men et al. 2024, 1 - cos).  Hooks on the layers read both states, so
the score is what each layer does inside the whole model, whatever the architecture's final norm.

The pruned model is the same architecture with fewer layers: the kept layers keep their weights, are
renumbered (their attention's ``layer_idx`` addresses the KV cache), and the config's ``num_hidden_layers``
(and ``layer_types`` where the family has one) follow, so it saves and loads with plain transformers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from lmtune.errors import ConfigError

SCORE = "angular distance arccos(cos(h_in, h_out))/pi, mean over real tokens"


def decoder_layers(model: Any) -> Any:
    """The model's ``ModuleList`` of decoder layers (``model.model.layers`` for Llama, Mistral, Qwen, Gemma,
    Phi-3; ``transformer.h`` for GPT-2): the first one as long as ``config.num_hidden_layers``."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = getattr(base.config, "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            return module
    raise ValueError(f"{type(base).__name__}: no list of {n} decoder layers found")


def layer_scores(model: Any, rows: Sequence[dict[str, Any]], pad_token_id: int, batch_size: int = 8) -> list[float]:
    """Each decoder layer's mean angular distance between its input and output hidden states on ``rows``
    (``input_ids``; every real token counts), in layer order."""
    import torch

    from lmtune.data.collate import PadCollator

    layers = decoder_layers(model)
    totals = [0.0] * len(layers)
    mask: dict[str, Any] = {}

    def measure(i: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1).clamp(-1.0, 1.0)
            totals[i] += float((torch.arccos(cos) / math.pi)[mask["real"]].sum())

        return hook

    handles = [layer.register_forward_hook(measure(i), with_kwargs=True) for i, layer in enumerate(layers)]
    collate, tokens, was_training = PadCollator(pad_token_id), 0, model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = collate([{"input_ids": list(r["input_ids"])} for r in rows[start : start + batch_size]])
                mask["real"] = batch["attention_mask"].bool().to(model.device)
                tokens += int(mask["real"].sum())
                model(input_ids=batch["input_ids"].to(model.device), attention_mask=mask["real"].long())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [t / max(tokens, 1) for t in totals]


def choose_layers(scores: Sequence[float], n: int) -> list[int]:
    """The ``n`` layers that change their input least (lowest scores), in layer order.  The first and the
    last layer are never chosen: both papers find them the most important (the first turns embeddings into
    the residual stream's working form, the last shapes it for the output head)."""
    middle = sorted(range(1, len(scores) - 1), key=lambda i: (scores[i], i))
    if not 0 <= n <= len(middle):
        raise ValueError(f"cannot drop {n} of {len(scores)} layers (the first and the last are kept)")
    return sorted(middle[:n])


def drop_layers(model: Any, drop: Sequence[int]) -> Any:
    """``model`` without the decoder layers ``drop`` (in place; returned): weights of the others unchanged,
    renumbered for the KV cache, the config told."""
    layers = decoder_layers(model)
    gone = set(drop)
    if not gone <= set(range(len(layers))) or len(gone) >= len(layers):
        raise ValueError(f"layers {sorted(gone)}: not a proper subset of the model's {len(layers)} layers")
    kept = [layer for i, layer in enumerate(layers) if i not in gone]
    for new, layer in enumerate(kept):
        for module in layer.modules():  # the attention (and any module) that indexes the cache by layer
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in gone]
    for i in sorted(gone, reverse=True):  # ModuleList re-keys what follows, so state-dict names stay dense
        del layers[i]
    config.num_hidden_layers = len(kept)
    return model


def pruned_copy(teacher: Any, rows: Sequence[dict[str, Any]], pad_token_id: int,
                drop: int | Sequence[int] | None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """A copy of ``teacher`` without ``drop`` layers: that many of the least important (None: a third, rounded
    down), or those indices; with every layer's score and the choice, as ``metrics.json`` records them."""
    n = len(decoder_layers(teacher))
    scores = layer_scores(teacher, rows, pad_token_id)
    if drop is None or isinstance(drop, int):
        count = n // 3 if drop is None else drop
        try:
            dropped = choose_layers(scores, count)
        except ValueError as e:
            raise ConfigError(f"distill.drop_layers: {e}") from None
    else:
        dropped = sorted(drop)
        if dropped[-1] >= n or len(dropped) >= n:
            raise ConfigError(
                f"distill.drop_layers: {list(drop)}: the model has {n} layers (0-{n - 1}); keep one at least"
            )
    student = drop_layers(copy.deepcopy(teacher), dropped)
    facts = {
        "layers": n,
        "kept": n - len(dropped),
        "dropped": dropped,
        "chosen": "lowest scores" if drop is None or isinstance(drop, int) else "distill.drop_layers",
        "scores": [round(s, 6) for s in scores],
        "score": SCORE,
        "scored_rows": len(rows),
    }
    return student, facts
