"""Qwen2 / Qwen2.5 (biased Q/K/V projections) and Qwen3 (RMS norms on Q and K): llama.cpp's ``qwen2`` / ``qwen3``.

Both rotate the two halves of each head as transformers does, so no row moves.
"""

from __future__ import annotations

from typing import Any

import gguf

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families.base import Family, layer_types


class Qwen2(Family):
    arch = gguf.MODEL_ARCH.QWEN2
    biases = ("q_proj", "k_proj", "v_proj")

    def check_layout(self, config: Any) -> None:
        if getattr(config, "use_sliding_window", False) and "sliding_attention" in layer_types(config):
            raise ExportError(f"GGUF export: {config.model_type} with sliding-window layers is not supported by "
                              "llama.cpp's graph")  # fmt: skip


class Qwen3(Qwen2):
    arch = gguf.MODEL_ARCH.QWEN3
    biases = ()


QWEN2 = Qwen2()
QWEN3 = Qwen3()
