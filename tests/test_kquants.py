"""k-quants: Q4_K / Q5_K / Q6_K blocks read back by gguf's own dequantiser, and llama.cpp's type mixes.

The error bounds below were measured on these fixed-seed data sets (relative RMSE, ``rms(x̂ - x) / rms(x)``)
and rounded up by 5-10%:

=============  ======  ======  ======  ==============  ==============
data           Q4_K    Q5_K    Q6_K    Q4_0 (gguf)     Q8_0 (gguf)
=============  ======  ======  ======  ==============  ==============
gaussian       0.0715  0.0363  0.0178  0.0862          0.0054
heavy-tailed   0.0692  0.0450  0.0265  0.0828          0.0122
weight-like    0.0967  0.0512  0.0305  0.1296          0.0108
=============  ======  ======  ======  ==============  ==============
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize
from gguf.quants import quantize as gguf_quantize

from lmtune.shipping.gguf.kquants import K_QUANT_FILE_TYPES, K_QUANTS, counts_as_70b, mix_type, quantize, uses_more_bits

Q = gguf.GGMLQuantizationType
K_TYPES = (Q.Q4_K, Q.Q5_K, Q.Q6_K)


def gaussian(seed: int = 0, rows: int = 64, cols: int = 1024) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def heavy_tailed(seed: int = 0) -> np.ndarray:
    """Student-t (3 degrees of freedom) at weight scale, with 0.2% of the values 50 times larger."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, (64, 1024)) * 0.02
    x[rng.random(x.shape) < 0.002] *= 50
    return x.astype(np.float32)


def weight_like(seed: int = 0) -> np.ndarray:
    """Rows like a linear layer's: t-distributed, input channels of lognormal scale, 8 outlier channels."""
    rng = np.random.default_rng(seed)
    channels = np.exp(rng.normal(0, 0.5, 1024))
    channels[rng.choice(1024, 8, replace=False)] *= 20
    rows = np.exp(rng.normal(0, 0.2, (64, 1)))
    return (rng.standard_t(5, (64, 1024)) * 0.01 * channels * rows).astype(np.float32)


def round_trip(x: np.ndarray, qtype: Q) -> np.ndarray:
    blocks = quantize(x, qtype) if qtype in K_TYPES else gguf_quantize(x, qtype)
    return dequantize(blocks, qtype)


def rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x**2)))


DATA = {"gaussian": gaussian, "heavy-tailed": heavy_tailed, "weight-like": weight_like}
BOUNDS = {  # Q4_K, Q5_K, Q6_K: the table above, rounded up
    "gaussian": (0.075, 0.038, 0.019),
    "heavy-tailed": (0.075, 0.048, 0.028),
    "weight-like": (0.10, 0.054, 0.033),
}


@pytest.mark.parametrize("name", DATA)
def test_round_trip_error_is_within_bounds_and_ordered_by_bits(name: str) -> None:
    x = DATA[name]()
    err = {qtype: rel_rmse(x, round_trip(x, qtype)) for qtype in (*K_TYPES, Q.Q4_0, Q.Q8_0)}
    for qtype, bound in zip(K_TYPES, BOUNDS[name], strict=True):
        assert err[qtype] < bound, f"{qtype.name} on {name}: {err[qtype]:.4f}"
    assert err[Q.Q6_K] < err[Q.Q5_K] < err[Q.Q4_K] < err[Q.Q4_0]
    # Two bits fewer than Q8_0 (a quarter of the levels) cost less than 4x its error, and Q6_K sits
    # much nearer Q8_0 than Q4_0.
    assert err[Q.Q6_K] < 4 * err[Q.Q8_0]
    assert err[Q.Q6_K] < err[Q.Q4_0] / 3


def naive_k(x: np.ndarray, qtype: Q) -> np.ndarray:
    """The values a k-quant block would hold if each sub-block took the plain min/max (or max-magnitude)
    grid instead of searching: same bits, same 6/8-bit sub-block scales against fp16 units."""
    if qtype == Q.Q6_K:
        g = x.reshape(-1, 16, 16)
        peak = np.take_along_axis(g, np.abs(g).argmax(2)[..., None], 2)[..., 0]
        scale = peak / -32  # the largest value on the grid's unpaired level -32
        top = np.take_along_axis(scale, np.abs(scale).argmax(1)[:, None], 1)
        d = (top / -128).astype(np.float16).astype(np.float32)
        step = d * np.clip(np.rint(scale / np.where(d == 0, 1, d)), -128, 127)
        q = np.clip(np.rint(g / np.where(step == 0, 1, step)[..., None]), -32, 31)
        return (q * step[..., None]).reshape(x.shape)
    nmax = 15 if qtype == Q.Q4_K else 31
    g = x.reshape(-1, 8, 32)
    lo = np.minimum(g.min(2), 0)
    scale = (g.max(2) - lo) / nmax
    d = (scale.max(1, keepdims=True) / 63).astype(np.float16).astype(np.float32)
    dmin = (-lo.min(1, keepdims=True) / 63).astype(np.float16).astype(np.float32)
    step = d * np.clip(np.rint(scale / np.where(d == 0, 1, d)), 0, 63)
    shift = dmin * np.clip(np.rint(-lo / np.where(dmin == 0, 1, dmin)), 0, 63)
    q = np.clip(np.rint((g + shift[..., None]) / np.where(step == 0, 1, step)[..., None]), 0, nmax)
    return (q * step[..., None] - shift[..., None]).reshape(x.shape)


@pytest.mark.parametrize("name", DATA)
@pytest.mark.parametrize("qtype", K_TYPES)
def test_scale_search_beats_the_min_max_grid(name: str, qtype: Q) -> None:
    x = DATA[name]()
    ratio = rel_rmse(x, round_trip(x, qtype)) / rel_rmse(x, naive_k(x, qtype))
    # Measured: Q4_K 0.61-0.91, Q5_K 0.71-0.95. Q6_K 0.94 on gaussian, but only 0.99-1.0 where a few
    # large values dominate each 16-value sub-block and the max-magnitude grid is already near best.
    assert ratio < (0.96 if qtype != Q.Q6_K or name == "gaussian" else 1.0), f"{ratio:.3f}"


@pytest.mark.parametrize("qtype", K_TYPES)
@pytest.mark.parametrize("shape", [(3, 512), (2, 3, 256), (1, 4096)])
def test_output_shape_and_size_are_the_block_layout(qtype: Q, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    blocks = quantize(x, qtype)
    block_bytes = {Q.Q4_K: 144, Q.Q5_K: 176, Q.Q6_K: 210}[qtype]  # ggml-common.h's static_asserts
    assert blocks.dtype == np.uint8
    assert blocks.shape == gguf.quant_shape_to_byte_shape(shape, qtype)
    assert blocks.nbytes == x.size // 256 * block_bytes
    assert dequantize(blocks, qtype).shape == shape


@pytest.mark.parametrize("qtype", K_TYPES)
def test_all_zero_rows_are_zero_blocks(qtype: Q) -> None:
    blocks = quantize(np.zeros((2, 512), np.float32), qtype)
    assert not blocks.any()  # ggml writes an all-zero block as zero bytes
    assert not dequantize(blocks, qtype).any()


@pytest.mark.parametrize("qtype", K_TYPES)
@pytest.mark.parametrize("value", [0.37, -1.5, 1000.0, -0.003])
def test_constant_rows_come_back_to_fp16_precision(qtype: Q, value: float) -> None:
    y = round_trip(np.full((2, 256), value, np.float32), qtype)
    assert np.allclose(y, value, rtol=1e-3, atol=0)  # fp16 units: 2^-11 relative, plus a code step


@pytest.mark.parametrize("qtype", K_TYPES)
def test_negative_only_rows(qtype: Q) -> None:
    x = -np.abs(gaussian(1))
    err = rel_rmse(x, round_trip(x, qtype))
    # Measured 0.041 / 0.021 / 0.018: the min takes the offset, so half-normal data does better than
    # gaussian for Q4_K and Q5_K.
    assert err < {Q.Q4_K: 0.045, Q.Q5_K: 0.023, Q.Q6_K: 0.019}[qtype]


@pytest.mark.parametrize("qtype", K_TYPES)
def test_a_huge_value_costs_only_its_own_super_block(qtype: Q) -> None:
    x = gaussian(2, rows=1, cols=1024)
    spiked = x.copy()
    spiked[0, 300] = 1e4  # in the second super-block (values 256..511)
    plain = quantize(x, qtype).reshape(4, -1)  # one row of four super-blocks
    with_spike = quantize(spiked, qtype).reshape(4, -1)
    assert [np.array_equal(a, b) for a, b in zip(plain, with_spike, strict=True)] == [True, False, True, True]
    assert abs(dequantize(with_spike.reshape(1, -1), qtype)[0, 300] - 1e4) < 1e4 * 1e-3


def stored_units(blocks: np.ndarray, qtype: Q) -> np.ndarray:
    """Each block's fp16 ``d`` (first two bytes for Q4_K / Q5_K, last two for Q6_K)."""
    per_block = blocks.reshape(-1, gguf.GGML_QUANT_SIZES[qtype][1])
    return (per_block[:, -2:] if qtype == Q.Q6_K else per_block[:, :2]).copy().view("<f2")[:, 0]


@pytest.mark.parametrize("qtype", K_TYPES)
def test_small_values_with_subnormal_fp16_units(qtype: Q) -> None:
    unit_scale = rel_rmse(gaussian(), round_trip(gaussian(), qtype))
    for sigma, bound in ((1e-3, 1.03 * unit_scale), (1e-4, {Q.Q4_K: 0.08, Q.Q5_K: 0.045, Q.Q6_K: 0.055}[qtype])):
        x = gaussian() * np.float32(sigma)
        blocks = quantize(x, qtype)
        d = np.abs(stored_units(blocks, qtype).astype(np.float32))
        assert np.mean((d > 0) & (d < 2.0**-14)) > 0.9  # the case under test: fp16 subnormals
        # Measured at 1e-4: 0.072 / 0.041 / 0.049; rounding the sub-block scales against the exact unit,
        # as ggml does, gives 0.080 / 0.055 / 0.116.
        assert rel_rmse(x, dequantize(blocks, qtype)) < bound
    tiny = gaussian() * np.float32(1e-6)  # the units underflow: the values can only come back near zero
    y = round_trip(tiny, qtype)
    assert np.isfinite(y).all() and np.abs(y - tiny).max() < 1e-5


@pytest.mark.parametrize("qtype", K_TYPES)
@pytest.mark.parametrize("cols", [80, 300, 32])
def test_rows_not_a_multiple_of_256_are_refused(qtype: Q, cols: int) -> None:
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize(np.ones((2, cols), np.float32), qtype)


@pytest.mark.parametrize("qtype", K_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(qtype: Q, bad: float) -> None:
    x = gaussian(rows=2, cols=256)
    x[1, 17] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(x, qtype)


@pytest.mark.parametrize("qtype", K_TYPES)
def test_values_beyond_the_fp16_units_are_refused(qtype: Q) -> None:
    x = gaussian(rows=1, cols=256)
    x[0, 3] = -1e9
    with pytest.raises(ValueError, match="too large"):
        quantize(x, qtype)


def test_other_types_are_refused() -> None:
    with pytest.raises(ValueError, match="Q4_K, Q5_K, Q6_K"):
        quantize(gaussian(rows=1, cols=256), Q.Q4_0)


def test_file_types() -> None:
    assert K_QUANTS == ("q4_k_m", "q5_k_m", "q6_k")
    assert [K_QUANT_FILE_TYPES[q].name for q in K_QUANTS] == ["MOSTLY_Q4_K_M", "MOSTLY_Q5_K_M", "MOSTLY_Q6_K"]


# --------------------------------------------------------------------------- llama.cpp's type mixes
# Rules from llama.cpp's src/llama-quant.cpp (llama_tensor_get_type_impl, tensor_type_fallback); a tensor's
# shape is in numpy order, its last dimension the row length.

T = gguf.MODEL_TENSOR
HIDDEN, FFN, KV, VOCAB = 2048, 5632, 256, 32000
BLOCK_SHAPES = {  # a 2048-wide llama block with grouped-query attention (256-wide K and V)
    T.ATTN_NORM: (HIDDEN,),
    T.ATTN_Q: (HIDDEN, HIDDEN),
    T.ATTN_K: (KV, HIDDEN),
    T.ATTN_V: (KV, HIDDEN),
    T.ATTN_OUT: (HIDDEN, HIDDEN),
    T.FFN_NORM: (HIDDEN,),
    T.FFN_GATE: (FFN, HIDDEN),
    T.FFN_UP: (FFN, HIDDEN),
    T.FFN_DOWN: (HIDDEN, FFN),
}
BASE = {"q4_k_m": Q.Q4_K, "q5_k_m": Q.Q5_K, "q6_k": Q.Q6_K}
# use_more_bits(i, n) = i < n/8 || i >= 7*n/8 || (i - n/8) % 3 == 2, in C's integer division.
# n = 30: n/8 = 3 and 7n/8 = 26, so layers 0-2, 26-29 and 5, 8, ..., 23.  n = 2: 0 and 1, so layer 1 only.
MORE_BITS = {30: {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}, 2: {1}}


def block_types(quant: str, n_layers: int, **flags: bool) -> dict[T, list[Q]]:
    return {
        kind: [mix_type(quant, kind, shape, layer, n_layers, **flags) for layer in range(n_layers)]
        for kind, shape in BLOCK_SHAPES.items()
    }


@pytest.mark.parametrize("n_layers", [30, 2])
@pytest.mark.parametrize("quant", K_QUANTS)
def test_block_tensor_types(quant: str, n_layers: int) -> None:
    types = block_types(quant, n_layers)
    base = BASE[quant]
    # Q4_K_M / Q5_K_M: attn_v and ffn_down get Q6_K on the use_more_bits layers; Q6_K has no such rule.
    bumped = [Q.Q6_K if quant != "q6_k" and i in MORE_BITS[n_layers] else base for i in range(n_layers)]
    assert types[T.ATTN_V] == bumped
    assert types[T.FFN_DOWN] == bumped
    for kind in (T.ATTN_Q, T.ATTN_K, T.ATTN_OUT, T.FFN_GATE, T.FFN_UP):  # no rule for these: the base type
        assert types[kind] == [base] * n_layers, kind.name
    for kind in (T.ATTN_NORM, T.FFN_NORM):  # 1-D: never quantised
        assert types[kind] == [Q.F32] * n_layers


@pytest.mark.parametrize("quant", K_QUANTS)
def test_embedding_and_output_types(quant: str) -> None:
    untied_embd = mix_type(quant, T.TOKEN_EMBD, (VOCAB, HIDDEN), None, 30)
    tied_embd = mix_type(quant, T.TOKEN_EMBD, (VOCAB, HIDDEN), None, 30, tied_embeddings=True)
    output = mix_type(quant, T.OUTPUT, (VOCAB, HIDDEN), None, 30)
    assert untied_embd == BASE[quant]  # the TOKEN_EMBD branch changes nothing for these file types
    assert output == Q.Q6_K  # "else if (new_type != GGML_TYPE_Q8_0) new_type = GGML_TYPE_Q6_K"
    assert tied_embd == Q.Q6_K  # without output.weight, token_embd takes the output tensor's type
    assert mix_type(quant, T.OUTPUT_NORM, (HIDDEN,), None, 30) == Q.F32


@pytest.mark.parametrize("quant", K_QUANTS)
def test_phi3_fused_qkv_follows_attn_v(quant: str) -> None:
    # category_is_attn_v() includes ATTENTION_QKV and is tested first, so its own rule (Q5_K for Q4_K_M)
    # is never reached.
    qkv = [mix_type(quant, T.ATTN_QKV, (3 * 3072, 3072), i, 32) for i in range(32)]
    v = [mix_type(quant, T.ATTN_V, (3072, 3072), i, 32) for i in range(32)]
    assert qkv == v
    if quant == "q4_k_m":
        assert set(qkv) == {Q.Q4_K, Q.Q6_K}


def test_70b_attn_v_is_raised_to_q5_k() -> None:
    # "if (qs.model.type == LLM_TYPE_70B) ... if (new_type == GGML_TYPE_Q3_K || new_type == GGML_TYPE_Q4_K)
    # new_type = GGML_TYPE_Q5_K": the llama loader's 80 layers with GQA (65B without), qwen2's 80 layers.
    assert counts_as_70b("llama", 80, 64, 8) and counts_as_70b("mistral", 80, 64, 8)
    assert not counts_as_70b("llama", 80, 64, 64)
    assert counts_as_70b("qwen2", 80, 64, 8) and counts_as_70b("qwen2", 80, 64, 64)
    assert not counts_as_70b("qwen3", 80, 64, 8) and not counts_as_70b("llama", 32, 32, 8)
    more_bits = set(range(10)) | set(range(70, 80)) | set(range(12, 70, 3))  # n/8 = 10, 7n/8 = 70
    assert {i for i in range(80) if uses_more_bits(i, 80)} == more_bits
    for quant, other_layers in (("q4_k_m", Q.Q5_K), ("q5_k_m", Q.Q5_K), ("q6_k", Q.Q6_K)):
        types = block_types(quant, 80, llama_cpp_70b=True)
        assert types[T.ATTN_V] == [Q.Q6_K if i in more_bits else other_layers for i in range(80)]
        assert types[T.FFN_DOWN] == block_types(quant, 80)[T.FFN_DOWN]  # the rule is attn_v's only


@pytest.mark.parametrize(
    ("quant", "fallback", "bumped_fallback"),
    [("q4_k_m", Q.Q5_0, Q.Q8_0), ("q5_k_m", Q.Q5_1, Q.Q8_0), ("q6_k", Q.Q8_0, Q.Q8_0)],
)
def test_rows_256_does_not_divide_fall_back(quant: str, fallback: Q, bumped_fallback: Q) -> None:
    # tensor_type_fallback: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; output / tied token_embd go to Q8_0
    # when 256 does not divide the row. 576 (SmolLM2-135M's width) splits into 32-value blocks.
    assert mix_type(quant, T.ATTN_Q, (576, 576), 4, 30) == fallback
    assert mix_type(quant, T.ATTN_V, (192, 576), 4, 30) == fallback
    assert mix_type(quant, T.ATTN_V, (192, 576), 0, 30) == bumped_fallback  # Q6_K on layer 0 -> Q8_0
    assert mix_type(quant, T.FFN_DOWN, (576, 1536), 4, 30) == BASE[quant]  # 1536 = 6 x 256: no fallback
    assert mix_type(quant, T.TOKEN_EMBD, (49152, 576), None, 30, tied_embeddings=True) == Q.Q8_0
    # 80 is not a multiple of 32 either: "must use F16 due to unusual shape", for every 2-D tensor.
    for kind, layer in ((T.ATTN_Q, 4), (T.ATTN_V, 0), (T.FFN_DOWN, 4), (T.OUTPUT, None), (T.TOKEN_EMBD, None)):
        assert mix_type(quant, kind, (160, 80), layer, 30) == Q.F16, kind.name
    assert mix_type(quant, T.ATTN_NORM, (80,), 4, 30) == Q.F32


def test_mix_type_refuses_what_it_cannot_place() -> None:
    with pytest.raises(ValueError, match="q4_k_m, q5_k_m, q6_k"):
        mix_type("q4_k_s", T.ATTN_Q, (256, 256), 0, 2)
    with pytest.raises(ValueError, match="layer"):
        mix_type("q4_k_m", T.ATTN_V, (256, 256), None, 2)
    with pytest.raises(ValueError, match="layer"):
        mix_type("q4_k_m", T.FFN_DOWN, (256, 256), 2, 2)
