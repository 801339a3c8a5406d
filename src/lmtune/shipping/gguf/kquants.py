"""GGML's k-quants Q4_K, Q5_K and Q6_K, written in numpy, for the in-process GGUF writer.

Why this module exists: the ``gguf`` package can *read* these block types (``gguf.quants.dequantize``)
but has no quantiser for them, and llama.cpp's quantiser is a C++ program (``llama-quantize``) that is
not installable here. So the block formats of ``ggml-common.h`` are written here from their description,
with the same kind of search ggml's reference quantisers do, vectorised over all super-blocks.

A super-block holds 256 values:

* **Q4_K / Q5_K** (144 / 176 bytes): eight sub-blocks of 32 values, each ``x ~ d*sc*q - dmin*m`` with
  ``q`` in 0..15 (0..31), the sub-block scale ``sc`` and min ``m`` on 6 bits against the super-block's two
  fp16 numbers ``d`` and ``dmin``. Per sub-block, the scale and min are chosen by trying a fixed ladder of
  grid spacings around ``range / nmax``; for each, the rounded codes give a weighted least-squares fit of
  scale and min (weights ``rms + |x|``, so large values count more), and the fit with the lowest weighted
  squared error wins.
* **Q6_K** (210 bytes): sixteen sub-blocks of 16 values, ``x ~ d*sc*q`` with ``q`` in -32..31 and ``sc`` a
  signed byte against one fp16 ``d``. Per sub-block a symmetric scale is searched the same way (19 grid
  spacings around ``max / 32``, weights ``x^2``), keeping the one whose least-squares fit explains most.

In both, the codes are computed again once the sub-block scales are rounded to their 6/8 bits. Without
an importance matrix this is what ``llama-quantize`` does. Checked against ggml's reference quantisers
(compiled from llama.cpp's source, outside the test suite): on data of unit scale about 97% of the blocks
are byte-identical, the others differ where float sums taken in another order tip a near tie, and the
RMSE agrees to four digits. One deliberate difference: where a block's fp16 unit (``d``, ``dmin``) is
subnormal, the 6/8-bit sub-block scales are rounded against the unit as stored rather than as computed.
That is common for Q6_K (any block whose values stay below ~0.25) and changes bytes there, not the error
at usual weight scales (RMSE equal to 4 digits at 0.01-0.05); at 1e-3 Q6_K's error is 2.5-13% lower than
ggml's, at 1e-4 less than half (Q5_K: a quarter lower), where ggml's rounding brings blocks back too
large or as zeros.

The type mixes (which tensor gets which type) are in :mod:`lmtune.shipping.gguf.kmix`.
"""

from __future__ import annotations

import gguf
import numpy as np

from lmtune.shipping.gguf.kmix import K_QUANT_FILE_TYPES, K_QUANTS, counts_as_70b, mix_type, uses_more_bits

__all__ = ["K_QUANTS", "K_QUANT_FILE_TYPES", "QK_K", "counts_as_70b", "mix_type", "quantize", "uses_more_bits"]

QK_K = 256  # values per super-block
_Q = gguf.GGMLQuantizationType
_CHUNK_BLOCKS = 1024  # super-blocks at once: 1 MB arrays stay in cache across the candidates (2x faster than 8192)
_ZERO_EPS = 1e-15  # below this a Q6_K sub-block or block counts as all zero (ggml's GROUP_MAX_EPS)
_FP16_MIN_NORMAL = np.float32(2.0**-14)  # below this fp16 keeps fewer than 11 significant bits


def quantize(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Quantise ``data`` to the GGML k-quant ``qtype`` (Q4_K, Q5_K or Q6_K).

    Args:
        data: float values of shape (..., cols), with cols a multiple of 256; rows are quantised alone.
        qtype: ``gguf.GGMLQuantizationType.Q4_K``, ``Q5_K`` or ``Q6_K``.

    Returns:
        uint8 array of shape ``gguf.quant_shape_to_byte_shape(data.shape, qtype)``: the blocks as
        ``gguf.quants.dequantize`` and llama.cpp read them.

    Raises:
        ValueError: for another type, a row length that is not a multiple of 256, NaN or infinite
            values, or values so large that a block's fp16 scale would overflow.
    """
    if qtype not in _QUANTISERS:
        raise ValueError(f"k-quant type must be one of Q4_K, Q5_K, Q6_K; got {gguf.GGMLQuantizationType(qtype).name}")
    values = np.asarray(data, dtype=np.float32)
    if values.ndim == 0 or values.shape[-1] % QK_K != 0:
        raise ValueError(f"{qtype.name} needs rows whose length is a multiple of {QK_K}; got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{qtype.name}: the data holds NaN or infinite values")
    blocks = values.reshape(-1, QK_K)
    out = np.empty((blocks.shape[0], gguf.GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8)
    # Values beyond fp16's range overflow on the way; the fp16 units are checked, and refused, at the end.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
            out[start : start + _CHUNK_BLOCKS] = _QUANTISERS[qtype](blocks[start : start + _CHUNK_BLOCKS])
    return out.reshape(gguf.quant_shape_to_byte_shape(values.shape, qtype))


# --------------------------------------------------------------------------- Q4_K and Q5_K


def _fit_scale_min(
    x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Search each row's grid ``x ~ scale*q + offset`` (q in 0..nmax, offset <= 0).

    ``x`` is (m, 32). Returns (scale, -offset, inverse spacing and offset whose rounding gave the chosen
    codes), each (m,). Grid spacings tried: ``span / nmax``, then ``span / (nmax + rmin + rdelta*i)`` for
    i = 0..nstep, each followed by the least-squares (scale, offset) for its codes. As in ggml, each
    candidate's grid starts at the best offset found so far, so the candidates are tried in order.
    """
    weights = np.sqrt(np.mean(x * x, axis=1, keepdims=True)) + np.abs(x)
    hi = x.max(axis=1)
    lo = np.minimum(x.min(axis=1), 0.0)  # the offset may only shift down: zero must stay reachable
    flat = hi == lo
    wx = weights * x
    sum_w, sum_x, sum_xx = (_row_dot(a, b) for a, b in ((weights, np.ones_like(x)), (weights, x), (wx, x)))
    codes, wl = np.empty_like(x), np.empty_like(x)  # reused by every candidate

    def code_sums(inv: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        np.subtract(x, start[:, None], out=codes)
        np.multiply(codes, inv[:, None], out=codes)
        np.clip(np.rint(codes, out=codes), 0, nmax, out=codes)
        np.multiply(weights, codes, out=wl)
        return _row_dot(weights, codes), _row_dot(wl, codes), _row_dot(wx, codes)

    def error(scale, offset, sl, sll, slx):
        # sum w*(scale*q + offset - x)^2 expanded, so no per-value pass is needed per candidate
        return (
            scale * scale * sll + offset * offset * sum_w + sum_xx
            + 2 * (scale * offset * sl - scale * slx - offset * sum_x)
        )  # fmt: skip

    def spacing(levels: float, start: np.ndarray) -> np.ndarray:
        span = hi - start
        return (np.float32(levels) / np.where(span > 0, span, np.float32(1))).astype(np.float32)

    best_inv, best_start = spacing(nmax, lo), lo
    best_scale = (np.float32(1) / best_inv).astype(np.float64)
    best_offset = lo.astype(np.float64)
    best_err = error(best_scale, best_offset, *code_sums(best_inv, lo))
    for step in range(nstep + 1):
        start = best_offset.astype(np.float32)
        inv = spacing(np.float32(rmin) + np.float32(rdelta) * np.float32(step) + np.float32(nmax), start)
        sl, sll, slx = code_sums(inv, start)
        scale, offset, solvable = _least_squares(sum_w, sum_x, sl, sll, slx)
        err = error(scale, offset, sl, sll, slx)
        better = solvable & (err < best_err)
        best_inv, best_start = np.where(better, inv, best_inv), np.where(better, start, best_start)
        best_scale, best_offset = np.where(better, scale, best_scale), np.where(better, offset, best_offset)
        best_err = np.where(better, err, best_err)
    best_scale = np.where(flat, 0.0, best_scale).astype(np.float32)
    best_offset = np.where(flat, lo, best_offset).astype(np.float32)
    return best_scale, -best_offset, np.where(flat, np.float32(0), best_inv), best_start


def _least_squares(
    sum_w: np.ndarray, sum_x: np.ndarray, sl: np.ndarray, sll: np.ndarray, slx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the (scale, offset <= 0) minimising sum w*(scale*q + offset - x)^2 for fixed codes q.

    Takes the weighted sums of 1, x, q, q^2 and q*x; returns (scale, offset, whether the fit is defined).
    """
    det = sum_w * sll - sl * sl
    solvable = det > 0
    det = np.where(solvable, det, 1.0)
    scale = (sum_w * slx - sum_x * sl) / det
    offset = (sll * sum_x - sl * slx) / det
    positive = offset > 0  # an offset above zero is not allowed: refit the scale alone through zero
    scale = np.where(positive, slx / np.where(sll > 0, sll, 1.0), scale)
    return scale, np.where(positive, 0.0, offset), solvable


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (m, k) float32 arrays, as float64 for the least-squares algebra."""
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def _to_fp16(values: np.ndarray, qtype_name: str) -> np.ndarray:
    half = values.astype(np.float16)
    if not np.isfinite(half).all():
        # fp16 stops at 65504: the units are at most |x| / 63 (Q4_K/Q5_K mins) or |x| / (32*128) (Q6_K)
        most = "4e6" if qtype_name != "Q6_K" else "2.6e8"
        raise ValueError(f"{qtype_name}: values too large for its fp16 block scales (it holds |x| up to ~{most})")
    return half


def _scale_codes(values: np.ndarray, top: np.ndarray, levels: int, unit: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Codes in lo..hi of the (n, k) sub-block scales ``values`` against each block's fp16 ``unit`` (n,).

    The unit is ``top / levels`` rounded to fp16, so the codes are ``values * levels / top`` rounded (ggml's
    rule). Where fp16 holds the unit only as a subnormal (blocks of values below ~1e-3, the unit then up to
    half a step off), the codes are taken against the stored unit instead: ggml's rule would bring such
    blocks back several times too large or as zeros.
    """
    inv = np.where(top != 0, np.float32(levels) / np.where(top != 0, top, 1), 0).astype(np.float32)
    codes = np.rint(inv[:, None] * values)
    coarse = (unit != 0) & (np.abs(unit) < _FP16_MIN_NORMAL)
    if coarse.any():
        codes[coarse] = np.rint(values[coarse] / unit[coarse, None].astype(np.float32))
    return np.clip(codes, lo, hi)


def _pack_scales_mins(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(n, 8) 6-bit scales and mins -> the (n, 12) bytes of ggml's ``scales`` field.

    Bytes 0-3 / 4-7 hold the first four scales / mins, with the top two bits of the last four in their
    bits 6-7; bytes 8-11 hold the low four bits of the last four scales (low nibble) and mins (high).
    """
    packed = np.empty((ls.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    packed[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return packed


def _scale_min_codes(
    blocks: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared body of Q4_K and Q5_K: (d, dmin as fp16 bytes (n, 4), packed scales (n, 12), codes (n, 256))."""
    n = blocks.shape[0]
    x = blocks.reshape(n * 8, 32)
    scale, neg_min, inv, start = _fit_scale_min(x, nmax, rmin, rdelta, nstep)
    scale, neg_min = scale.reshape(n, 8), neg_min.reshape(n, 8)
    max_scale = np.maximum(scale.max(axis=1), 0)
    max_min = np.maximum(neg_min.max(axis=1), 0)
    d = _to_fp16(max_scale / np.float32(63), name)
    dmin = _to_fp16(max_min / np.float32(63), name)
    ls = _scale_codes(scale, max_scale, 63, d, 0, 63).astype(np.uint8)
    lm = _scale_codes(neg_min, max_min, 63, dmin, 0, 63).astype(np.uint8)
    # Codes again against the scales as stored, so the 6-bit rounding of each scale is partly absorbed.
    step = (d.astype(np.float32)[:, None] * ls).reshape(-1, 1)
    shift = (dmin.astype(np.float32)[:, None] * lm).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(np.rint((x + shift) / step), 0, nmax)
    dead = step[:, 0] == 0  # the value is -dmin*m whatever the code: keep the search's codes, as ggml does
    if dead.any():
        codes[dead] = np.clip(np.rint(inv[dead, None] * (x[dead] - start[dead, None])), 0, nmax)
    header = np.concatenate([d[:, None], dmin[:, None]], axis=1).astype("<f2").view(np.uint8)
    return header, _pack_scales_mins(ls, lm), codes.astype(np.uint8).reshape(n, QK_K)


def _low_nibbles(codes: np.ndarray) -> np.ndarray:
    """(n, 256) codes -> (n, 128): in each 64-value group, value j in the low nibble and j+32 in the high."""
    pairs = codes.reshape(-1, 4, 2, 32) & 0xF
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    header, scales, codes = _scale_min_codes(blocks, 15, -1.0, 0.1, 20, "Q4_K")
    return np.concatenate([header, scales, _low_nibbles(codes)], axis=1)


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    header, scales, codes = _scale_min_codes(blocks, 31, -0.5, 0.1, 15, "Q5_K")
    # qh[j]: bit k is the fifth bit of value j of sub-block k
    fifth = (codes.reshape(-1, 8, 32) >> 4).astype(np.uint8)
    high = np.bitwise_or.reduce(fifth << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    return np.concatenate([header, scales, high, _low_nibbles(codes)], axis=1)


# --------------------------------------------------------------------------- Q6_K


def _fit_symmetric(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search each row's grid ``x ~ scale*q`` (q in -32..31) for the (m, 16) rows ``x``.

    Returns (scale, inverse spacing whose rounding gave the chosen codes), each (m,). The largest-magnitude
    value is mapped to -32, the grid's one unpaired level; spacings ``max / (32 + 0.1*i)`` for i in -9..9
    are tried, each with its least-squares scale (weights ``x^2``), and the best fit kept.
    """
    rows = np.arange(x.shape[0])
    peak = x[rows, np.abs(x).argmax(axis=1)]  # signed; argmax takes the first of equal magnitudes, as ggml
    zero = np.abs(peak) < _ZERO_EPS
    peak = np.where(zero, np.float32(1), peak)
    weights, wx = x * x, x * x * x
    codes, wl = np.empty_like(x), np.empty_like(x)  # reused by every candidate

    def least_squares(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        inv = (-(np.float32(32) + np.float32(0.1) * np.float32(step)) / peak).astype(np.float32)
        np.multiply(x, inv[:, None], out=codes)
        np.clip(np.rint(codes, out=codes), -32, 31, out=codes)
        np.multiply(weights, codes, out=wl)
        slx, sll = _row_dot(wx, codes), _row_dot(wl, codes)
        scale = slx / np.where(sll > 0, sll, 1.0)
        return inv, scale, scale * slx, sll > 0  # scale*slx: the weighted squared error the fit removes

    best_inv, best_scale, best_fit, defined = least_squares(0)
    best_scale = np.where(defined, best_scale, 0.0)
    for step in (*range(-9, 0), *range(1, 10)):
        inv, scale, fit, defined = least_squares(step)
        better = defined & (fit > best_fit)
        best_inv, best_scale, best_fit = (
            np.where(better, a, b) for a, b in ((inv, best_inv), (scale, best_scale), (fit, best_fit))
        )
    return np.where(zero, 0.0, best_scale).astype(np.float32), np.where(zero, np.float32(0), best_inv)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    x = blocks.reshape(n * 16, 16)
    scale, inv = _fit_symmetric(x)
    scale = scale.reshape(n, 16)
    top = scale[np.arange(n), np.abs(scale).argmax(axis=1)]
    zero = np.abs(top) < _ZERO_EPS
    top = np.where(zero, np.float32(0), top)
    d = _to_fp16(np.where(zero, 0, np.float32(1) / (np.float32(-128) / np.where(zero, 1, top))), "Q6_K")
    sc = _scale_codes(scale, top, -128, d, -128, 127).astype(np.int8)
    # Codes again against the scales as stored (see _scale_min_codes).
    step = (d.astype(np.float32)[:, None] * sc).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(np.rint(x / step), -32, 31)
    dead = step[:, 0] == 0
    codes[dead] = np.clip(np.rint(inv[dead, None] * x[dead]), -32, 31)
    codes[inv == 0] = -32  # all-zero sub-blocks: code 0, as ggml writes them
    codes = (codes + 32).astype(np.uint8).reshape(n, QK_K)
    codes[zero] = 0  # an all-zero block is written as zero bytes, as ggml does
    unit = d.astype("<f2").view(np.uint8).reshape(n, 2)
    return np.concatenate([*_q6_k_codes(codes), sc.view(np.uint8), unit], axis=1)


def _q6_k_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256) 6-bit codes -> ql (n, 128) low nibbles and qh (n, 64) top two bits.

    In each half of 128 values, split in quarters k = 0..3 of 32: ql[l] holds quarters 0 and 2 (low and
    high nibble), ql[32 + l] quarters 1 and 3, and qh[l] the top two bits of quarter k at bits 2k.
    """
    quarters = codes.reshape(-1, 2, 4, 32)
    low, top = quarters & 0xF, quarters >> 4
    ql = np.stack([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = top[:, :, 0] | (top[:, :, 1] << 2) | (top[:, :, 2] << 4) | (top[:, :, 3] << 6)
    return ql.reshape(-1, 128), qh.reshape(-1, 64)


_QUANTISERS = {_Q.Q4_K: _q4_k, _Q.Q5_K: _q5_k, _Q.Q6_K: _q6_k}
