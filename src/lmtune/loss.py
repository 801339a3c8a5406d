"""Causal-LM loss on the labelled positions only, with the LM head run in chunks that keep no logits.

Trainer's default path runs the LM head on every position and keeps (tokens, vocab) float32 tensors
(the log-softmax for backward, the logits and their gradient at the peak): with a 49,152-token
vocabulary each is 141 MB for 8 x 90 tokens, and most positions (prompt, padding) carry no label
anyway. Here the model runs
without its head, the hidden states of the positions whose next token has a label are picked out,
and head + cross-entropy run on chunks of them, each under ``torch.utils.checkpoint``: a chunk's
logits are freed after the forward and recomputed in backward, so at most one chunk of logits is
alive at a time. A fused linear cross-entropy would avoid even that recomputation, but there is no
maintained CPU implementation (Liger Kernel's is Triton, GPU-only).

The reduction is Transformers' ``ForCausalLMLoss``: summed NLL divided by ``num_items_in_batch``
when Trainer passes it (gradient accumulation), else the mean over the batch's label tokens.
"""

from __future__ import annotations

from typing import Any

from lmtune.data.encode import IGNORE

CHUNK = 1024
"""Labelled positions per chunk: (1024, 49,152) float32 logits are 200 MB, recomputed in backward."""
CHANGED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_router_logits")
"""Config keys of models whose forward changes the head's logits (Gemma 2/3, Cohere, Granite) or adds
to the loss (MoE router loss): their loss is not head + cross-entropy on the decoder's states."""


def loss_parts(model: Any) -> tuple[Any, Any] | str:
    """(decoder, LM head) of ``model`` when its loss is plain head + cross-entropy; else why not.

    PEFT adapters of the LoRA family are injected into the decoder's layers in place, so calling
    the base model's decoder applies them; tuners that change the forward are left to it.
    """
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None:
        from peft.tuners.tuners_utils import BaseTuner

        name = getattr(peft_config.peft_type, "value", peft_config.peft_type)
        if peft_config.is_prompt_learning:
            return f"{name} puts virtual tokens inside the model's forward"
        if type(model.base_model).forward is not BaseTuner.forward:
            return f"{name}'s forward adds its own term to the loss (AdaLoRA: the orthogonal regulariser)"
        model = model.get_base_model()
    config = getattr(model, "config", None)
    if changed := [key for key in CHANGED_LOGITS if getattr(config, key, None)]:
        return f"the model's forward changes its logits or loss ({', '.join(changed)})"
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if head is None or decoder is None or decoder is model:
        return "the model has no separate decoder and LM head"
    return decoder, head


def causal_lm_loss(
    decoder: Any, head: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, chunk_size: int = CHUNK
) -> Any:
    """The loss ``model(**inputs).loss`` gives, from the decoder's hidden states and the head in chunks."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, targets, keep = labelled_states(decoder, inputs)
    sums = []
    for start in range(0, len(targets), chunk_size):
        h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled():  # keep only h; the chunk's logits are recomputed in backward
            sums.append(checkpoint(_summed_nll, head, h, t, use_reentrant=False))
        else:
            sums.append(_summed_nll(head, h, t))
    total = sum(sums) if sums else hidden.float().sum()  # no label at all: 0, and backward still runs
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


def labelled_states(decoder: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(hidden states, next tokens) of the labelled positions only, and the (B, T-1) mask that picked them.

    The states come out in row-major order, so ``keep.nonzero()[:, 0]`` gives each one's row.
    """
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
    hidden = decoder(**model_inputs, use_cache=False)[0]  # (B, T, hidden)
    targets = inputs["labels"][:, 1:]  # the state at position t predicts the token at t + 1
    keep = targets != IGNORE
    return hidden[:, :-1][keep], targets[keep], keep  # (n, hidden), (n,), (B, T-1)


def _summed_nll(head: Any, hidden: Any, targets: Any) -> Any:
    import torch.nn.functional as F

    logits = head(hidden).float()  # (chunk, vocab), upcast as ForCausalLMLoss does
    return F.cross_entropy(logits, targets, reduction="sum")


def matches_model_loss(model: Any, decoder: Any, head: Any) -> bool:
    """Whether ``causal_lm_loss`` equals ``model(**batch).loss`` on a tiny seeded batch (eval mode).

    Catches what ``loss_parts`` cannot see, e.g. modelling code that scales the logits by itself.
    Draws from its own generator, so the run's random state is untouched.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    ids = torch.randint(vocab, (2, 8), generator=g).to(device)
    labels = ids.clone()
    labels[:, :3] = IGNORE  # a prompt without labels
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # and a padded row
    labels[1, -2:] = IGNORE
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(**batch, use_cache=False).loss.float()
            got = causal_lm_loss(decoder, head, batch)
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return False
    finally:
        model.train(was_training)
    tol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 1e-2
    return bool(torch.isclose(got, expected, rtol=tol, atol=tol))
