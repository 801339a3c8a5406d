"""The export check's gate: NMSE of the logits and greedy agreement with the run's own model, by format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtune.errors import ExportError
from lmtune.shipping.check import nmse
from lmtune.shipping.export import export
from lmtune.shipping.gate import FLOAT_GATES, QUANTISED, stored_as, verdict

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def quiet(*_: object) -> None:
    pass


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A LoRA adapter with a large update (every linear layer, B not zero) on a wider random Llama.

    Its weights are drawn ten times wider than the tiny test models' (initializer_range 0.2), so
    its logits are large, as a trained model's are: a float32 merge then differs from the unmerged
    adapter by more than 1e-4 in some logit through summation order alone, and q4_0 rounding
    changes most of its greedy tokens.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    root = tmp_path_factory.mktemp("wide")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR, init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(root / "run")
    tokenizer.save_pretrained(root / "run")
    return root / "run"


def test_nmse_is_the_error_power_over_the_variance_of_the_runs_logits() -> None:
    torch.manual_seed(0)
    ref = [torch.randn(5, 40) * 3, torch.randn(7, 40) * 3]
    out = [r + 0.1 * torch.randn_like(r) for r in ref]
    flat_ref, flat_out = torch.cat([r.flatten() for r in ref]).double(), torch.cat([o.flatten() for o in out]).double()
    expected = float(((flat_out - flat_ref) ** 2).mean() / flat_ref.var(unbiased=False))
    assert nmse(out, ref) == pytest.approx(expected, rel=1e-9)
    # One constant added to every logit changes no probability, and changes nothing here either.
    assert nmse([o + 50 for o in out], [r + 50 for r in ref]) == pytest.approx(expected, rel=1e-6)
    assert nmse(ref, ref) == 0.0


def measures(**changed: Any) -> dict[str, Any]:
    base = {"nmse": 1e-6, "finite": True, "greedy_match": 1.0, "greedy_token_match": 1.0, "max_abs_logit_diff": 0.1}
    return {**base, **changed}


def test_what_the_weights_are_stored_as_picks_the_gate() -> None:
    assert [stored_as(None, "float32"), stored_as(None, "bfloat16"), stored_as("bf16", None)] == [
        "float32", "bfloat16", "bfloat16"
    ]  # fmt: skip
    assert [stored_as("int8", "int8 weights, float32 activations"), stored_as("q4_k_m", None)] == ["int8", "q4_k_m"]


@pytest.mark.parametrize(
    ("stored", "changed", "failure"),
    [
        ("float32", {"nmse": 1e-9}, None),
        ("float32", {"nmse": 2e-3}, "NMSE 2.00e-03 > 1e-05"),
        ("bfloat16", {"nmse": 2.7e-2}, None),  # a bf16 merge of a LoRA run of SmolLM2 gives this much
        ("float16", {"nmse": 2.7e-2}, "NMSE 2.70e-02 > 0.01"),
        ("bfloat16", {"greedy_match": 2 / 3}, "same greedy answers 66.7% < 100%"),
        ("q4_0", {"greedy_match": 0.0, "greedy_token_match": 0.95, "nmse": 0.05}, None),
        ("q4_0", {"greedy_token_match": 0.5}, "answer tokens ranked first as by the run 50.0% < 90%"),
        ("q4_0", {"greedy_token_match": 26 / 29}, "answer tokens ranked first as by the run 89.7% < 90%"),  # SmolLM2
        ("int8", {"nmse": float("nan"), "finite": False}, "the logits hold NaN or infinity"),
        ("q4_k_m", {"nmse": 0.6}, "NMSE 6.00e-01 > 0.1"),  # a format added later is gated as a quantisation
    ],
)
def test_the_gate_by_what_the_weights_are_stored_as(stored: str, changed: dict[str, Any], failure: str | None) -> None:
    figures, failures = verdict(measures(**changed), stored)
    assert figures["passed"] is (failure is None)
    assert (failure in failures) if failure else failures == []
    gate = FLOAT_GATES.get(stored, QUANTISED)
    assert (figures["nmse_max"], figures["greedy_match_min"]) == (gate.nmse_max, gate.greedy_match_min)


def test_a_float_merge_off_by_summation_order_only_passes(wide_run: Path, tmp_path: Path) -> None:
    """A correct float32 merge whose max |Δlogit| exceeds 1e-4 (the gate this check replaced) passes."""
    result = export(wide_run, tmp_path / "hf", echo=quiet)
    check = json.loads((tmp_path / "hf" / "export.json").read_text())["check"]
    assert check == json.loads(json.dumps(result["check"]))
    assert result["dtype"] == "float32" and check["max_abs_logit_diff"] > 1e-4
    assert check["nmse"] < 1e-9 and check["greedy_match"] == 1.0
    assert check["passed"] is True and check["accepted_degraded"] is False


def test_a_degraded_quantisation_is_refused_and_writes_nothing(wide_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "q4"
    with pytest.raises(ExportError) as failed:
        export(wide_run, out, "gguf", "q4_0", echo=quiet)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("export check failed for gguf q4_0: NMSE ")
    assert f"> {QUANTISED.nmse_max:g}" in message and "nothing was written" in message
    assert "--accept-degraded" in message
    assert not out.exists() and not list(tmp_path.glob(".tmp*"))


def test_accept_degraded_writes_it_and_export_json_says_so(wide_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "q4"
    args = ["export", str(wide_run), "--output", str(out), "--format", "gguf", "--quant", "q4_0", "--accept-degraded"]
    done = subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "warning: export check failed for gguf q4_0" in done.stdout
    check = json.loads((out / "export.json").read_text())["check"]
    assert check["passed"] is False and check["accepted_degraded"] is True
    assert check["nmse"] > check["nmse_max"] == QUANTISED.nmse_max
    assert check["greedy_token_match"] < check["greedy_token_match_min"]
    assert (out / json.loads((out / "export.json").read_text())["file"]).is_file()


def test_the_export_help_names_the_thresholds_and_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from lmtune.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"NMSE <= {FLOAT_GATES['float32'].nmse_max:g} (float32)" in text
    assert f"NMSE <= {QUANTISED.nmse_max:g}" in text
    assert "--accept-degraded" in text and "accepted degraded" in text
