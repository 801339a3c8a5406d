"""Is an export close enough to the run's own model?  Thresholds by what the weights are stored as.

The measures come from `lmtune.shipping.check.compare`: the NMSE of the logits (mean squared
error over the variance of the run's logits, llama.cpp's measure), the share of check prompts
with the run's greedy answer, the share of the run's answer tokens the export ranks first,
and whether every logit is finite.

A float copy differs from the run's model by rounding alone, so it must give every greedy
answer of the run, and its NMSE must stay within what its rounding gives.  Measured (NMSE of
the export against the run's model, on the run's check prompts):

=================================  ========  ========  ========  =======  =======  =======  =======  =======  ====
run                                float32   float16   bfloat16  q8_0     int8     q6_k     q5_k_m   q4_k_m   q4_0
=================================  ========  ========  ========  =======  =======  =======  =======  =======  ====
SmolLM2-135M + 30-step LoRA        9.3e-12   1.2e-06   2.0e-03   9.5e-04  6.1e-03  4.9e-03  8.4e-02  5.4e-02  0.61
same LoRA, base published 16-bit             1.4e-06   2.7e-02
tiny test Llama + 3-step LoRA      1.5e-14   8.8e-08   6.2e-06   6.2e-05  4.8e-06                              1.3e-03
=================================  ========  ========  ========  =======  =======  =======  =======  =======  ====

(float32 and the second line are HF folders in that dtype, int8 is torchao's, the rest GGUF
files.)  Dropping the adapter altogether gives 0.46 on the SmolLM2 run.  A bfloat16 merge onto a
bfloat16 base is the largest float figure: many of the adapter's small updates fall below
bfloat16's resolution and are rounded away together, yet every greedy answer stays the run's.
So: float32 1e-5 (summation order only; room for TF32-style matmuls), float16 1e-2 (llama.cpp's
pass mark for a conversion), bfloat16 0.1 (the top of llama.cpp's "acceptable" band, 4x the
figure above).  Quantised copies get the same 0.1 and are gated on what users notice, the
answers: at least 90% of the run's answer tokens ranked first (q8_0, int8, q6_k and q4_k_m keep
all of the SmolLM2 run's, q5_k_m 97%; q4_0 — of a base that is itself a dequantised 4-bit file —
just under 90%, one whole answer in three, NMSE 0.61: a copy to accept knowingly, with
``--accept-degraded``, not by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gate:
    """What an export's check must measure to pass; None: not gated."""

    nmse_max: float
    greedy_match_min: float | None  # share of check prompts whose whole greedy answer is the run's
    greedy_token_match_min: float | None  # share of the run's answer tokens the export ranks first too


FLOAT_GATES = {  # by the dtype the weights are stored in
    "float32": Gate(nmse_max=1e-5, greedy_match_min=1.0, greedy_token_match_min=None),
    "float16": Gate(nmse_max=1e-2, greedy_match_min=1.0, greedy_token_match_min=None),
    "bfloat16": Gate(nmse_max=0.1, greedy_match_min=1.0, greedy_token_match_min=None),
}
GGUF_FLOATS = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
QUANTISED = Gate(nmse_max=0.1, greedy_match_min=None, greedy_token_match_min=0.9)

GATE_HELP = (
    "The check compares the written model, loaded back with plain transformers, with the run's own on held-out "
    "prompts: NMSE of the logits (mean squared error / variance of the run's logits), greedy answers, finite "
    "logits. Float copies (hf, gguf f32/f16/bf16) must give every greedy answer of the run, with NMSE <= "
    f"{FLOAT_GATES['float32'].nmse_max:g} (float32), {FLOAT_GATES['float16'].nmse_max:g} (float16) or "
    f"{FLOAT_GATES['bfloat16'].nmse_max:g} (bfloat16); quantised ones (int8, q8_0, q4_0, k-quants) NMSE <= "
    f"{QUANTISED.nmse_max:g} and at least {QUANTISED.greedy_token_match_min:.0%} of the run's answer tokens "
    "ranked first. A failed check writes nothing unless --accept-degraded."
)

_MEASURES = {"greedy_match": "same greedy answers", "greedy_token_match": "answer tokens ranked first as by the run"}


def stored_as(fmt_quant: str | None, dtype: str | None) -> str:
    """What the exported weights are: ``float32`` / ``float16`` / ``bfloat16``, or the quantisation's name."""
    if fmt_quant is None:
        return dtype or "float32"
    return GGUF_FLOATS.get(fmt_quant, fmt_quant)


def gate_for(stored: str) -> Gate:
    return FLOAT_GATES.get(stored, QUANTISED)  # a quantisation added later is gated as one by default


def verdict(measured: dict[str, Any], stored: str) -> tuple[dict[str, Any], list[str]]:
    """(the check's figures and thresholds for export.json, one phrase per failed threshold)."""
    gate = gate_for(stored)
    failures = [] if measured["finite"] else ["the logits hold NaN or infinity"]
    if not measured["nmse"] <= gate.nmse_max:  # written this way so that NaN fails
        failures.append(f"NMSE {measured['nmse']:.2e} > {gate.nmse_max:g}")
    for key, least in (("greedy_match", gate.greedy_match_min), ("greedy_token_match", gate.greedy_token_match_min)):
        if least is not None and measured[key] < least:
            failures.append(f"{_MEASURES[key]} {measured[key]:.1%} < {least:.0%}")
    figures = {
        "stored_as": stored,
        "nmse": measured["nmse"],
        "nmse_max": gate.nmse_max,
        "greedy_match": measured["greedy_match"],
        "greedy_match_min": gate.greedy_match_min,
        "greedy_token_match": measured["greedy_token_match"],
        "greedy_token_match_min": gate.greedy_token_match_min,
        "finite": measured["finite"],
        "max_abs_logit_diff": measured["max_abs_logit_diff"],  # information only: it grows with the logits' size
        "passed": not failures,
    }
    return figures, failures
