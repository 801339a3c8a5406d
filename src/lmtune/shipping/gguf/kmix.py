"""The GGML type llama.cpp's ``llama-quantize`` gives each tensor for the file types Q4_K_M, Q5_K_M and Q6_K.

Read from ``llama_tensor_get_type``, ``llama_tensor_get_type_impl`` and ``tensor_type_fallback`` in
llama.cpp's ``src/llama-quant.cpp`` (run without an importance matrix, ``--pure`` or per-tensor overrides),
for the dense architectures lmtune exports: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3. In order:

1. 1-D tensors (norms, biases, rope factors) are not quantised: F32.
2. ``output.weight``, and ``token_embd.weight`` when there is no ``output.weight`` (tied embeddings:
   llama.cpp then gives the embedding "the quantization of the output tensor"): Q6_K, or Q8_0 when the
   row length is not a multiple of 256.
3. ``attn_v``, and phi3's fused ``attn_qkv`` (llama.cpp's ``category_is_attn_v``, tested before its own
   ``attn_qkv`` rule, which is therefore never reached): Q6_K for Q4_K_M and Q5_K_M on the layers
   :func:`uses_more_bits` picks (the first and last eighth, and every third in between). In a model
   llama.cpp types as "70B" (:func:`counts_as_70b`) an ``attn_v`` still at Q4_K becomes Q5_K.
4. ``ffn_down``: Q6_K for Q4_K_M and Q5_K_M on the same layers.
5. Every other 2-D tensor (token_embd when untied, attn_q/k/output, ffn_gate/up): the base type,
   Q4_K / Q5_K / Q6_K.
6. Last, a row length the chosen type's block does not divide falls back (Q4_K -> Q5_0, Q5_K -> Q5_1,
   Q6_K -> Q8_0), and to F16 when the 32-value block of the fallback does not divide it either.

The per-layer counters llama.cpp keeps (``i_attention_wv``, ``i_ffn_down``) equal the layer index here,
since it visits tensors sorted by layer and each dense layer has one ``attn_v`` (or ``attn_qkv``) and one
``ffn_down``. The ``n_gqa()`` thresholds do not apply: llama.cpp uses them only for the Q2_K, IQ3 and IQ4
file types. Left out on purpose, as they never fire for these models and file types: the mixture-of-
experts rules (``n_expert == 8``: attn_v/attn_k at Q8_0, attn_output at Q5_K, expert layers parsed from
names), Falcon's ffn_down rule, ``attn_kv_b`` (MLA models), importance-matrix rules, and the user's
overrides (``--output-tensor-type``, ``--token-embedding-type``, ``--tensor-type``, ``--pure``,
``--leave-output-tensor``).
"""

from __future__ import annotations

import gguf

_Q = gguf.GGMLQuantizationType
_T = gguf.MODEL_TENSOR

K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")
K_QUANT_FILE_TYPES = {
    "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
    "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M,
    "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K,
}
_BASE_TYPE = {"q4_k_m": _Q.Q4_K, "q5_k_m": _Q.Q5_K, "q6_k": _Q.Q6_K}
# attn_v / attn_qkv / ffn_down on the layers uses_more_bits picks; q6_k has no such rule
_MORE_BITS_TYPE = {"q4_k_m": _Q.Q6_K, "q5_k_m": _Q.Q6_K}
_ROW_FALLBACK = {_Q.Q4_K: _Q.Q5_0, _Q.Q5_K: _Q.Q5_1, _Q.Q6_K: _Q.Q8_0}  # for rows 256 does not divide
_ATTN_V_LIKE = (_T.ATTN_V, _T.ATTN_QKV)
_PER_LAYER = (*_ATTN_V_LIKE, _T.FFN_DOWN)
# model_type -> (layer count, whether GQA is also needed) that llama.cpp's loader types as LLM_TYPE_70B;
# mistral is llama.cpp's llama architecture. qwen3, gemma2, gemma3 and phi3 are never typed 70B.
_LLAMA_CPP_70B = {"llama": (80, True), "mistral": (80, True), "qwen2": (80, False)}


def uses_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third in between."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


def counts_as_70b(model_type: str, n_layers: int, n_head: int, n_head_kv: int) -> bool:
    """Whether llama.cpp's loader types this model as "70B" (``LLM_TYPE_70B``), which raises attn_v's type.

    Args:
        model_type: the transformers ``config.model_type`` (llama, mistral, qwen2, ...).
        n_layers: the number of transformer blocks.
        n_head: attention heads.
        n_head_kv: key/value heads (fewer than ``n_head`` with grouped-query attention).
    """
    layers, needs_gqa = _LLAMA_CPP_70B.get(model_type, (None, False))
    return n_layers == layers and (n_head != n_head_kv or not needs_gqa)


def mix_type(
    quant: str,
    kind: gguf.MODEL_TENSOR,
    shape: tuple[int, ...],
    layer: int | None,
    n_layers: int,
    *,
    tied_embeddings: bool = False,
    llama_cpp_70b: bool = False,
) -> gguf.GGMLQuantizationType:
    """The type llama-quantize gives a tensor for the file type ``quant`` (one of :data:`K_QUANTS`).

    Args:
        quant: "q4_k_m", "q5_k_m" or "q6_k".
        kind: the tensor's ``gguf.MODEL_TENSOR``.
        shape: its shape in numpy order; the last dimension is the row length (GGUF's ne[0]).
        layer: its block index, or None for tensors outside the blocks.
        n_layers: the model's number of blocks.
        tied_embeddings: True when the file has no ``output.weight`` (token_embd is also the output).
        llama_cpp_70b: what :func:`counts_as_70b` says for the model.

    Raises:
        ValueError: for an unknown ``quant``, or a per-layer tensor without a valid ``layer``.
    """
    if quant not in _BASE_TYPE:
        raise ValueError(f"k-quant file type must be one of {', '.join(K_QUANTS)}; got '{quant}'")
    if len(shape) < 2:
        return _Q.F32
    if kind in _PER_LAYER and (layer is None or not 0 <= layer < n_layers):
        raise ValueError(f"{kind.name} needs its layer index in 0..{n_layers - 1}; got {layer}")
    row = shape[-1]
    if kind == _T.OUTPUT or (kind == _T.TOKEN_EMBD and tied_embeddings):
        chosen = _Q.Q6_K if row % gguf.QK_K == 0 else _Q.Q8_0
    elif kind in _ATTN_V_LIKE:
        chosen = _layer_type(quant, layer, n_layers)
        if llama_cpp_70b and chosen == _Q.Q4_K:
            chosen = _Q.Q5_K  # 8 query heads share each V head there: more bits for little size
    elif kind == _T.FFN_DOWN:
        chosen = _layer_type(quant, layer, n_layers)
    else:
        chosen = _BASE_TYPE[quant]
    return _fit_row(chosen, row)


def _layer_type(quant: str, layer: int, n_layers: int) -> gguf.GGMLQuantizationType:
    if quant in _MORE_BITS_TYPE and uses_more_bits(layer, n_layers):
        return _MORE_BITS_TYPE[quant]
    return _BASE_TYPE[quant]


def _fit_row(qtype: gguf.GGMLQuantizationType, row: int) -> gguf.GGMLQuantizationType:
    """``qtype``, or llama.cpp's fallback when its block does not divide the row length."""
    if row % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    fallback = _ROW_FALLBACK.get(qtype, qtype)  # Q8_0 (block 32) has no smaller block to go to
    return fallback if row % gguf.GGML_QUANT_SIZES[fallback][0] == 0 else _Q.F16
