"""Phi-3 / Phi-3.5 / Phi-4: llama.cpp's ``phi3`` graph, with transformers' fused QKV and gate+up matrices as they are.

LongRoPE (the 128k-context variants) becomes llama.cpp's short/long frequency-factor tensors and attention factor;
partial rotary embeddings (Phi-4-mini) its rotary dimension count. llama.cpp does not apply Phi-3's sliding window
(its loader turns it off), so answers beyond ``sliding_window`` tokens can differ from transformers'.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np

from lmtune.shipping.gguf.families.base import Family, T, Tensor, rope_parameters


class Phi3(Family):
    arch = gguf.MODEL_ARCH.PHI3
    rope_types = ("default", "longrope")
    partial_rotary = True

    def extra_hyperparameters(self, writer: gguf.GGUFWriter, config: Any) -> None:
        rope = rope_parameters(config)
        original = rope.get("original_max_position_embeddings") or getattr(
            config, "original_max_position_embeddings", None
        )
        writer.add_rope_scaling_orig_ctx_len(int(original or config.max_position_embeddings))
        writer.add_sliding_window(int(getattr(config, "sliding_window", None) or 0))
        if rope["rope_type"] == "longrope":
            scale = config.max_position_embeddings / original
            factor = rope.get("attention_factor") or (
                math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1.0 else 1.0
            )
            writer.add_rope_scaling_attn_factors(float(factor))

    def extra_tensors(self, config: Any) -> Iterator[Tensor]:
        rope = rope_parameters(config)
        if rope["rope_type"] != "longrope":
            return
        for kind, key in ((T.ROPE_FACTORS_LONG, "long_factor"), (T.ROPE_FACTORS_SHORT, "short_factor")):
            factors = np.asarray(rope[key], dtype=np.float32)
            yield Tensor(gguf.TENSOR_NAMES[kind] + ".weight", kind, None, factors.shape, lambda f=factors: f)


PHI3 = Phi3()
