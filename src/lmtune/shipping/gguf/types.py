"""The GGML type of each tensor for each ``--quant``, and the bytes of a tensor in that type.

* 1-D tensors (norms, biases, RoPE factors) are always F32, as in llama.cpp;
* ``f32`` / ``f16`` / ``bf16``: every 2-D weight in that type;
* ``q8_0``: 2-D weights whose rows split into 32-value blocks are Q8_0, others F16 (as ``convert_hf_to_gguf``);
* ``q4_0``: the same with Q4_0, except ``token_embd`` and ``output``, which stay Q8_0: logits are the most
  sensitive to them (``llama-quantize`` gives ``output`` Q6_K);
* ``q4_k_m`` / ``q5_k_m`` / ``q6_k``: the mixes ``llama-quantize`` writes (``kquants.mix_type``).
"""

from __future__ import annotations

import gguf
import numpy as np

from lmtune.shipping.gguf.families import Tensor

Q = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR
GGUF_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")
K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
    "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
}
_WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}


def tensor_type(quant: str, tensor: Tensor, n_layers: int) -> gguf.GGMLQuantizationType:
    if len(tensor.shape) < 2:
        return Q.F32
    if quant in K_QUANTS:
        from lmtune.shipping.gguf.kquants import mix_type

        return mix_type(quant, tensor.kind, tensor.shape, tensor.layer, n_layers)
    qtype = _WEIGHT_TYPES[quant]
    if quant == "q4_0" and tensor.kind in (T.TOKEN_EMBD, T.OUTPUT):
        qtype = Q.Q8_0
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if tensor.shape[-1] % block_size == 0 else Q.F16


def encode(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """``values`` (float32) as the bytes (or floats) GGUF stores for ``qtype``."""
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        from lmtune.shipping.gguf.kquants import quantize

        return np.ascontiguousarray(quantize(np.ascontiguousarray(values.reshape(-1, values.shape[-1])), qtype))
    return np.ascontiguousarray(gguf.quants.quantize(np.ascontiguousarray(values), qtype))
