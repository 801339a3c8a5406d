"""Llama and Mistral: llama.cpp's ``llama`` graph (what its converter writes for both).

llama.cpp rotates adjacent pairs of each head's Q/K rows where transformers rotates the two halves, so those rows
are interleaved on the way; Llama 3.1+'s frequency-dependent RoPE becomes the ``rope_freqs`` tensor llama.cpp
divides its rotary frequencies by.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families.base import Family, T, Tensor, head_dimension, rope_parameters


class Llama(Family):
    arch = gguf.MODEL_ARCH.LLAMA
    rope_types = ("default", "linear", "llama3")

    def check_layout(self, config: Any) -> None:
        window = getattr(config, "sliding_window", None)
        if window is not None and window < config.max_position_embeddings:
            raise ExportError(
                f"GGUF export: sliding-window attention ({window} tokens) is not supported by llama.cpp's llama graph"
            )

    def reader_config(self, config: Any) -> Any:
        """Mistral as Llama: transformers' GGUF reader maps tensor names through gguf-py's architectures, which have
        no "mistral" (llama.cpp runs Mistral as llama; without a sliding window the two compute the same)."""
        if config.model_type == "llama":
            return config
        from transformers import LlamaConfig

        settings = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
        settings.pop("sliding_window", None)
        return LlamaConfig(**settings)

    def transform(self, values: np.ndarray, kind: gguf.MODEL_TENSOR, name: str, config: Any) -> np.ndarray:
        heads = self._heads(kind, config)
        return values if heads is None else interleave_rotary_halves(values, heads)

    @staticmethod
    def _heads(kind: gguf.MODEL_TENSOR, config: Any) -> int | None:
        n_head = config.num_attention_heads
        return {T.ATTN_Q: n_head, T.ATTN_K: getattr(config, "num_key_value_heads", None) or n_head}.get(kind)

    def untransform(self, values: np.ndarray, kind: gguf.MODEL_TENSOR, config: Any) -> np.ndarray:
        heads = self._heads(kind, config)
        return values if heads is None else pair_rotary_halves(values, heads)

    def extra_tensors(self, config: Any) -> Iterator[Tensor]:
        if rope_parameters(config)["rope_type"] != "llama3":
            return
        factors = llama3_frequency_factors(config)
        yield Tensor(gguf.TENSOR_NAMES[T.ROPE_FREQS] + ".weight", T.ROPE_FREQS, None, factors.shape, lambda: factors)


def interleave_rotary_halves(values: np.ndarray, n_head: int) -> np.ndarray:
    """Each head's rows (x0..x(d/2-1), y0..y(d/2-1)) -> (x0, y0, x1, y1, ...): half-split RoPE to pairwise RoPE."""
    rows = values.shape[0]
    return values.reshape(n_head, 2, rows // n_head // 2, *values.shape[1:]).swapaxes(1, 2).reshape(values.shape)


def pair_rotary_halves(values: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`interleave_rotary_halves`."""
    rows = values.shape[0]
    return values.reshape(n_head, rows // n_head // 2, 2, *values.shape[1:]).swapaxes(1, 2).reshape(values.shape)


def llama3_frequency_factors(config: Any) -> np.ndarray:
    """What llama.cpp divides each rotary frequency by: unscaled / Llama-3-scaled, from transformers' own RoPE code."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    theta = float(rope_parameters(config)["rope_theta"])
    dim = head_dimension(config)
    plain = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    return (plain / scaled.double().numpy()).astype(np.float32)


LLAMA = Llama()
