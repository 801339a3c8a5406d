"""GGUF exports of every family lmtune writes, opened by the real llama.cpp (node-llama-cpp 3.21.1's binaries).

For each family, on a tiny random model with a tokenizer of that family's kind, written at f32, f16 and q8_0:
llama.cpp tokenises the test texts as the transformers tokenizer does, its log-probabilities over a prompt match
transformers' (normalised MSE below 1e-2, the bound of llama.cpp's own ``check-nmse.py``), and at f32 its greedy
tokens are transformers' greedy tokens.
"""

from __future__ import annotations

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
