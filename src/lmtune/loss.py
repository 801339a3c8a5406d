"""Causal-LM loss on the labelled positions only, with the LM head run in chunks that keep no logits.

Trainer's default path runs the LM head on every position and keeps (tokens, vocab) float32 tensors
(the log-softmax for backward, the logits and their gradient at the peak): with a 49,152-token
vocabulary each is 141 MB for 8 x 90 tokens, and most positions (prompt, padding) carry no label
anyway. Here the model runs
without its head, the hidden states of the positions whose next token has a label are picked out,
and head + cross-entropy run on chunks of them, each under ``torch.utils.checkpoint``: a chunk's
logits are freed after the forward and recomputed in backward, so at most one chunk of logits is
alive at a time. With ``fused`` (``training.fused_loss``) the chunks go further: the gradient of each
chunk's cross-entropy with respect to its hidden states (and to the head's weight, when that trains) is
computed right in the forward, where the chunk's logits already are, and kept instead of the logits:
no recomputation in backward and no log-softmax kept for autograd. That is Liger Kernel's "fused
linear cross-entropy"; it is written here because Liger's is Triton (GPU-only) and there is no
maintained CPU implementation.

The reduction is Transformers' ``ForCausalLMLoss``: summed NLL divided by ``num_items_in_batch``
when Trainer passes it (gradient accumulation), else the mean over the batch's label tokens.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lmtune.data.encode import IGNORE

CHUNK = 1024
"""Labelled positions per chunk: (1024, 49,152) float32 logits are 200 MB, recomputed in backward."""
FUSED_CHUNK = 256
"""Labelled positions per chunk of the fused loss: (256, 49,152) float32 logits are 50 MB and the head's
matmul on 256 rows still runs near the machine's matmul speed (measured: 512 rows gave no more)."""
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
    decoder: Any,
    head: Any,
    inputs: dict[str, Any],
    num_items_in_batch: Any = None,
    chunk_size: int = CHUNK,
    fused: bool = False,
) -> Any:
    """The loss ``model(**inputs).loss`` gives, from the decoder's hidden states and the head in chunks."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, targets, keep = labelled_states(decoder, inputs)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    if fused and needs_grad and len(targets) and fusable_head(head):
        total = _linear_cross_entropy().apply(hidden, head.weight, targets, min(chunk_size, FUSED_CHUNK))
    else:
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


def fusable_head(head: Any) -> bool:
    """A plain bias-free ``nn.Linear`` head (adapters or quantised heads keep the checkpointed path)."""
    import torch

    return type(head) is torch.nn.Linear and head.bias is None


@cache
def _linear_cross_entropy() -> Any:
    """The autograd Function, built on first use so that importing this module does not import torch."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Summed NLL of ``hidden @ weight.T`` against ``targets``, its gradients computed chunk by chunk in forward.

        For one chunk, d(sum NLL)/d(logits) = softmax(logits) - onehot(targets); from it the chunk's
        gradient for ``hidden`` (and ``weight``) is one matmul each, done while the logits exist.
        Backward only scales the kept gradients by the incoming one (a scalar).
        """

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, chunk_size: int) -> Any:
            ctx.weight_dtype = weight.dtype
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            for start in range(0, len(targets), chunk_size):
                h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
                logits = (h @ weight.T).float()  # upcast as ForCausalLMLoss does
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                probs[torch.arange(len(t), device=t.device), t] -= 1
                grad_logits = probs.to(weight.dtype)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk_size] = grad_logits @ weight
                if grad_weight is not None:
                    grad_weight += (grad_logits.T @ h).float()
            ctx.save_for_backward(grad_hidden, grad_weight)
            return total

        @staticmethod
        def backward(ctx: Any, grad_total: Any) -> Any:
            grad_hidden, grad_weight = ctx.saved_tensors
            scale = grad_total.float()
            return (
                None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
                None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype),
                None,
                None,
            )

    return LinearCrossEntropy


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
