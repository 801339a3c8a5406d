"""GGUF exports of every family lmtune writes, opened by the real llama.cpp (node-llama-cpp 3.21.1's binaries).

For each family, on a tiny random model with a tokenizer of that family's kind, written at f32, f16 and q8_0:
llama.cpp tokenises the test texts as the transformers tokenizer does, its log-probabilities over a prompt match
transformers' (normalised MSE below 1e-2, the bound of llama.cpp's own ``check-nmse.py``), and at f32 its greedy
tokens are transformers' greedy tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llamacpp
import pytest
import torch
from gguf_cases import CASES, PROMPT, TEXTS, tiny_model, tokenizer_for

from lmtune.shipping.gguf import write_gguf

pytestmark = pytest.mark.skipif(llamacpp.missing() is not None, reason=str(llamacpp.missing()))

NMSE_MAX = 1e-2  # llama.cpp's check-nmse.py: "good match" below this
GREEDY_TOKENS = 16
QUANTS = ("f32", "f16", "q8_0")


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A family's tiny model, its tokenizer, and what llama.cpp answers for each quant of its GGUF."""
    case = CASES[request.param]
    folder = tmp_path_factory.mktemp(case.model_type)
    tokenizer = tokenizer_for(case, folder / "tokenizer")
    model = tiny_model(case, tokenizer)
    prompt = tokenizer.encode(PROMPT)
    answers = {}
    for quant in QUANTS:
        path = folder / f"{case.model_type}-{quant}.gguf"
        write_gguf(model, tokenizer, path, quant=quant)
        answers[quant] = llamacpp.ask(
            path,
            tokenize=[{"text": text} for text in TEXTS],
            logprobs=[prompt],
            greedy=[{"tokens": prompt, "max_tokens": GREEDY_TOKENS}],
        )
    return {"case": case, "tokenizer": tokenizer, "model": model, "prompt": prompt, "answers": answers}


def reference_logprobs(model: Any, ids: list[int]) -> Any:
    with torch.no_grad():
        return llamacpp.log_softmax(model(torch.tensor([ids])).logits[0].float().numpy())


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_tokenises_like_transformers(exported: dict[str, Any], quant: str) -> None:
    tokenizer = exported["tokenizer"]
    expected = [tokenizer.encode(text, add_special_tokens=False) for text in TEXTS]
    assert exported["answers"][quant]["tokens"] == expected
    assert exported["answers"][quant]["add_bos"] == (tokenizer.encode("a")[0] == tokenizer.bos_token_id)


@pytest.mark.parametrize("quant", QUANTS)
def test_llama_cpp_logits_match_transformers(exported: dict[str, Any], quant: str) -> None:
    window = exported["case"].config.get("sliding_window")
    assert not window or len(exported["prompt"]) > 2 * window  # so the window changes the logits
    reference = reference_logprobs(exported["model"], exported["prompt"])
    error = llamacpp.nmse(reference, exported["answers"][quant]["logprobs"][0])
    # measured on these models: f32 and f16 about 1e-7 to 1e-6, q8_0 about 1e-4
    assert error < NMSE_MAX, f"{exported['case'].model_type} {quant}: NMSE {error:.2e}"


def test_llama_cpp_greedy_tokens_are_transformers_greedy_tokens(exported: dict[str, Any]) -> None:
    answer = exported["answers"]["f32"]
    ids = exported["prompt"]
    with torch.no_grad():
        out = exported["model"].generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=GREEDY_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
        )[0, len(ids):].tolist()  # fmt: skip
    ours = answer["greedy"][0]["tokens"]
    # llama.cpp stops at its end-of-generation tokens; transformers was told not to: compare up to that stop
    assert len(ours) == GREEDY_TOKENS or answer["greedy"][0]["stopped"]
    assert out[: len(ours)] == ours


def test_every_family_is_exercised() -> None:
    from lmtune.shipping.gguf.families import FAMILIES

    assert set(CASES) == set(FAMILIES)


K_QUANTS = ("q4_k_m", "q5_k_m", "q6_k")


@pytest.fixture(scope="module")
def k_quant_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 256-wide Llama (rows of whole k-quant super-blocks) at f32 and each k-quant mix, asked in llama.cpp."""
    case = CASES["llama"]
    folder = tmp_path_factory.mktemp("k-quants")
    tokenizer = tokenizer_for(case, folder)
    model = tiny_model(case, tokenizer, hidden=256, intermediate=512)
    prompt = tokenizer.encode(PROMPT)
    out = {"model": model, "prompt": prompt, "paths": {}, "answers": {}}
    for quant in ("f32", *K_QUANTS):
        path = folder / f"{quant}.gguf"
        write_gguf(model, tokenizer, path, quant=quant)
        out["paths"][quant] = path
        out["answers"][quant] = llamacpp.ask(path, logprobs=[prompt])["logprobs"][0]
    return out


@pytest.mark.parametrize("quant", K_QUANTS)
def test_k_quant_blocks_mean_the_same_in_llama_cpp_as_in_gguf_s_dequantiser(
    k_quant_answers: dict[str, Any], quant: str
) -> None:
    """transformers dequantises the file with the ``gguf`` package; llama.cpp reads the same bytes its own way.

    llama.cpp multiplies k-quant weights with activations rounded to 8 bits (Q8_K), which alone makes an NMSE of
    about 7e-4 on this model, whatever the k-quant; a block read wrongly would be off by orders of magnitude more.
    """
    from transformers import AutoModelForCausalLM

    path = k_quant_answers["paths"][quant]
    dequantised = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, config=k_quant_answers["model"].config
    ).eval()
    reference = reference_logprobs(dequantised, k_quant_answers["prompt"])
    assert llamacpp.nmse(reference, k_quant_answers["answers"][quant]) < 2e-3


def test_k_quant_error_against_the_f32_export_in_llama_cpp_shrinks_with_more_bits(
    k_quant_answers: dict[str, Any],
) -> None:
    """Measured on this random model (weights with little structure, so rounding shows): 0.079, 0.021, 0.0067."""
    f32 = k_quant_answers["answers"]["f32"]
    errors = [llamacpp.nmse(f32, k_quant_answers["answers"][quant]) for quant in K_QUANTS]
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] < 0.2 and errors[2] < NMSE_MAX, errors


LORA_TARGETS = {  # each family's matrices as PEFT names them; rsLoRA on one, so its scale is not alpha / r
    "llama": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"], False),
    "phi3": (["qkv_proj", "o_proj", "gate_up_proj"], False),
    "qwen2": (["q_proj", "k_proj", "v_proj"], True),
    "gemma2": (["q_proj", "k_proj", "down_proj"], False),
}


@pytest.mark.parametrize("family", sorted(LORA_TARGETS))
def test_adapter_gguf_on_the_base_gguf_equals_the_merged_gguf_in_llama_cpp(family: str, tmp_path: Path) -> None:
    import copy

    from peft import LoraConfig, get_peft_model

    from lmtune.shipping.gguf.lora import write_lora_gguf

    case = CASES[family]
    tokenizer = tokenizer_for(case, tmp_path / "tokenizer")
    base = tiny_model(case, tokenizer)
    targets, rslora = LORA_TARGETS[family]
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False, use_rslora=rslora)
    adapted = get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():  # an update large enough to change the answers
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.mul_(5)
    record = write_lora_gguf(adapted, tmp_path / "adapter.gguf", "adapter")
    assert record == {"lora_alpha": 16.0, "adapted_matrices": len(targets) * case_layers(base)}
    write_gguf(base, tokenizer, tmp_path / "base.gguf")
    write_gguf(adapted.merge_and_unload(), tokenizer, tmp_path / "merged.gguf")
    ids = tokenizer.encode(PROMPT)
    ask = {"logprobs": [ids], "greedy": [{"tokens": ids, "max_tokens": GREEDY_TOKENS}]}
    with_adapter = llamacpp.ask(tmp_path / "base.gguf", lora=[tmp_path / "adapter.gguf"], **ask)
    merged = llamacpp.ask(tmp_path / "merged.gguf", **ask)
    plain = llamacpp.ask(tmp_path / "base.gguf", **ask)
    # measured: 1e-11 to 3e-7 with the adapter, 1.4 to 2 without it
    assert llamacpp.nmse(merged["logprobs"][0], with_adapter["logprobs"][0]) < 1e-5
    assert llamacpp.nmse(merged["logprobs"][0], plain["logprobs"][0]) > 0.1
    assert with_adapter["greedy"] == merged["greedy"]


def case_layers(model: Any) -> int:
    return model.config.num_hidden_layers
