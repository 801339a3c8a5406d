"""Adapters that compute in the autocast dtype without first copying their input to float32.

PEFT casts each LoRA layer's input to the adapter weights' dtype (float32) before ``lora_A``; under
bfloat16 autocast the matmul then casts it straight back, so every adapted module made two copies of
its input and kept one for backward (82 MB per step with q/k/v/o on SmolLM2 at 592 tokens, measured
with saved-tensor hooks). With autocast on, the cast is skipped (PEFT's own ``cast_input_dtype_enabled``
switch) and the adapter reads the same bfloat16 tensor as the base layer. Outside autocast (generation
and evaluation between training steps) the cast is needed again, hence a context manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def adapter_input_casts(model: Any, enabled: bool) -> Iterator[int]:
    """Set PEFT's input cast on every adapter layer for the ``with`` block; yields how many layers have one."""
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    before = [m.cast_input_dtype_enabled for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = enabled
    try:
        yield len(layers)
    finally:
        for m, value in zip(layers, before, strict=True):
            m.cast_input_dtype_enabled = value
