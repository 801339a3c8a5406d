"""The GGML type of each tensor for each ``--quant``, and the bytes of a tensor in that type.

* 1-D tensors (norms, biases, RoPE factors) are always F32, as in llama.cpp;
* ``f32`` / ``f16`` / ``bf16``: every 2-D weight in that type;
* ``q8_0``: 2-D weights whose rows split into 32-value blocks are Q8_0, others F16 (as ``convert_hf_to_gguf``);
* ``q4_0``: the same with Q4_0, except the output matrix (``output``, or ``token_embd`` when the head is tied),
  which is Q6_K (Q8_0 when its rows do not split into 256-value blocks), as ``llama-quantize`` does: logits are
  the most sensitive to it;
* ``q4_k_m`` / ``q5_k_m`` / ``q6_k``: the mixes ``llama-quantize`` writes (:mod:`lmtune.shipping.gguf.kmix`).
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np

from lmtune.shipping.gguf.families import Tensor
from lmtune.shipping.gguf.kmix import K_QUANT_FILE_TYPES, K_QUANTS, counts_as_70b, mix_type

Q = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    **K_QUANT_FILE_TYPES,
}
_WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}


def tensor_types(quant: str, tensors: list[Tensor], config: Any) -> list[gguf.GGMLQuantizationType]:
    """The type of each tensor of a model (``config``) written as ``quant``."""
    tied = all(t.kind != T.OUTPUT for t in tensors)
    n_layers = config.num_hidden_layers
    heads = config.num_attention_heads
    big = counts_as_70b(config.model_type, n_layers, heads, getattr(config, "num_key_value_heads", None) or heads)
    return [_type(quant, t, n_layers, tied, big) for t in tensors]


def _type(quant: str, tensor: Tensor, n_layers: int, tied: bool, big: bool) -> gguf.GGMLQuantizationType:
    if len(tensor.shape) < 2:
        return Q.F32
    if quant in K_QUANTS:
        return mix_type(quant, tensor.kind, tensor.shape, tensor.layer, n_layers, tied_embeddings=tied,
                        llama_cpp_70b=big)  # fmt: skip
    qtype = _WEIGHT_TYPES[quant]
    row = tensor.shape[-1]
    if quant == "q4_0" and (tensor.kind == T.OUTPUT or (tensor.kind == T.TOKEN_EMBD and tied)):
        qtype = Q.Q6_K if row % gguf.QK_K == 0 else Q.Q8_0
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if row % block_size == 0 else Q.F16


def encode(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """``values`` (float32) as the bytes (or floats) GGUF stores for ``qtype``."""
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        from lmtune.shipping.gguf.kquants import quantize

        return np.ascontiguousarray(quantize(np.ascontiguousarray(values.reshape(-1, values.shape[-1])), qtype))
    return np.ascontiguousarray(gguf.quants.quantize(np.ascontiguousarray(values), qtype))
