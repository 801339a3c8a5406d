"""Gemma 2 and Gemma 3 (text): llama.cpp's ``gemma2`` / ``gemma3`` graphs.

What differs from Llama: RMS norms multiply by (1 + w) in transformers and by w in llama.cpp, so every norm weight
gains 1 on the way; GELU (tanh); the embeddings scaled by sqrt(hidden) (both engines do it themselves); a sliding
window on all but every 2nd (Gemma 2) / 6th (Gemma 3) layer, with its own RoPE base in Gemma 3; soft-capped
attention (Gemma 2) and output logits. llama.cpp derives the attention scale from the head size (from
hidden / heads for the 27B models), so a ``query_pre_attn_scalar`` that says otherwise is refused.
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families.base import Family, check_window_pattern, head_dimension, rope_parameters

TWENTY_SEVEN_B_LAYERS = {"gemma2": 46, "gemma3_text": 62}  # llama.cpp's own test for its 27B attention scale


class Gemma2(Family):
    arch = gguf.MODEL_ARCH.GEMMA2
    activation_key = "hidden_activation"
    activation = "gelu_pytorch_tanh"
    ties_head = True
    window_every = 2

    def check_layout(self, config: Any) -> None:
        scalar = getattr(config, "query_pre_attn_scalar", None)
        expected = head_dimension(config)
        if config.num_hidden_layers == TWENTY_SEVEN_B_LAYERS[config.model_type]:
            expected = config.hidden_size // config.num_attention_heads
        if scalar is not None and scalar != expected:
            raise ExportError(f"GGUF export: query_pre_attn_scalar {scalar} differs from the {expected} llama.cpp "
                              "scales attention by for this model size")  # fmt: skip
        if getattr(config, "sliding_window", None):
            check_window_pattern(config, self.window_every)

    def transform(self, values: np.ndarray, kind: gguf.MODEL_TENSOR, name: str, config: Any) -> np.ndarray:
        return values + 1.0 if name.endswith("norm.weight") else values

    def extra_hyperparameters(self, writer: gguf.GGUFWriter, config: Any) -> None:
        writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 0.0))
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping or 0.0))
        writer.add_sliding_window(int(config.sliding_window or 0))


class Gemma3(Gemma2):
    arch = gguf.MODEL_ARCH.GEMMA3
    ties_head = False
    window_every = 6

    def check_layout(self, config: Any) -> None:
        if getattr(config, "attn_logit_softcapping", None):
            raise ExportError("GGUF export: llama.cpp's gemma3 graph has no attention soft-capping")
        super().check_layout(config)

    def extra_hyperparameters(self, writer: gguf.GGUFWriter, config: Any) -> None:
        if config.final_logit_softcapping:
            writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
        if config.sliding_window:
            writer.add_sliding_window(int(config.sliding_window))
            writer.add_rope_freq_base_swa(float(rope_parameters(config, "sliding_attention")["rope_theta"]))


GEMMA2 = Gemma2()
GEMMA3 = Gemma3()
