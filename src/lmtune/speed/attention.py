"""The attention kernel a run trains with: ``model.attn_implementation``, ``auto`` resolved here.

Measured on a 2-core AVX512-BF16 CPU (SmolLM2-135M, LoRA, bfloat16, packed rows, forward + backward,
both kernels interleaved in one process): eager attention gave 1.18x the tokens/s of SDPA on rows of
~90 tokens and 1.11x on rows of ~300, and the same speed on rows of ~400. PyTorch's CPU SDPA kernel
with an explicit (block-diagonal) mask is the flash-attention loop, built for long rows; eager's small
batched matmuls win on short ones. Eager keeps each layer's (rows x heads x T x T) attention
probabilities for backward, so ``auto`` only picks it on short rows; GPUs keep the library's default.
"""

from __future__ import annotations

from typing import Any

EAGER_MAX_LENGTH = 256
"""Longest training row (tokens) for which ``auto`` picks eager attention on a CPU: at 256 tokens and
batch 8 its saved probabilities are 0.3 GB over SmolLM2's 30 layers; at 1,024 they would be 4.5 GB."""


def attention_for(choice: str, longest_row: int, on_cpu: bool) -> str | None:
    """The ``attn_implementation`` to train with, or None for the library's default (SDPA)."""
    if choice != "auto":
        return choice
    if on_cpu and longest_row <= EAGER_MAX_LENGTH:
        return "eager"
    return None


def training_on_cpu(cfg: Any) -> bool:
    """Whether this run will train on the CPU (no accelerator, or ``training.use_cpu``)."""
    import torch

    if getattr(cfg.training, "use_cpu", False):
        return True
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())
