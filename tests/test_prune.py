"""Depth pruning: layer scores as the angular distance each layer makes, and a pruned model that is the
teacher's own layers, renumbered, saving and loading with plain transformers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import tiny_llama_config

from lmtune.compress import choose_layers, decoder_layers, drop_layers, layer_scores

ROWS = ["Add 2 and 3.", "The weather in Oslo is rainy on Monday.", "Hi"]


@pytest.fixture
def four_layers(tokenizer: Any) -> Any:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, num_hidden_layers=4)).eval()


def rows(tokenizer: Any) -> list[dict[str, list[int]]]:
    return [{"input_ids": tokenizer(text)["input_ids"]} for text in ROWS]


def test_scores_are_each_layers_angular_distance_over_real_tokens(four_layers, tokenizer) -> None:
    """Against a computation from output_hidden_states, one row at a time (no padding at all)."""
    scores = layer_scores(four_layers, rows(tokenizer), tokenizer.pad_token_id, batch_size=2)
    totals, tokens = [0.0] * 4, 0
    with torch.no_grad():
        for row in rows(tokenizer):
            states = four_layers(torch.tensor([row["input_ids"]]), output_hidden_states=True).hidden_states
            tokens += len(row["input_ids"])
            for i in range(3):  # the last entry of hidden_states is after the final norm: layer 4 is checked apart
                cos = torch.nn.functional.cosine_similarity(states[i][0], states[i + 1][0], dim=-1).clamp(-1, 1)
                totals[i] += float((torch.arccos(cos) / math.pi).sum())
    for i in range(3):
        assert scores[i] == pytest.approx(totals[i] / tokens, rel=1e-4)
    assert all(0 < s < 1 for s in scores)


def test_choose_keeps_the_first_and_last_layer() -> None:
    assert choose_layers([0.0, 0.5, 0.1, 0.3, 0.0], 2) == [2, 3]
    with pytest.raises(ValueError, match="cannot drop 4 of 5 layers"):
        choose_layers([0.1] * 5, 4)


def test_the_pruned_model_is_the_teachers_layers_renumbered(four_layers, tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    teacher = {k: v.clone() for k, v in four_layers.state_dict().items()}
    student = drop_layers(four_layers, [1, 2])

    assert student.config.num_hidden_layers == 2 and len(decoder_layers(student)) == 2
    assert [layer.self_attn.layer_idx for layer in decoder_layers(student)] == [0, 1]
    state = student.state_dict()
    for new, old in ((0, 0), (1, 3)):  # kept layers: the teacher's weights, exactly
        for name in [k for k in teacher if k.startswith(f"model.layers.{old}.")]:
            assert torch.equal(state[name.replace(f"layers.{old}.", f"layers.{new}.")], teacher[name])
    assert not any(k.startswith(("model.layers.2.", "model.layers.3.")) for k in state)
    assert torch.equal(state["model.embed_tokens.weight"], teacher["model.embed_tokens.weight"])

    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([rows(tokenizer)[1]["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, student(ids).logits, atol=1e-6)
        # the KV cache is addressed by the renumbered layers: cached greedy decoding equals uncached
        cached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_dropping_every_layer_or_an_unknown_one_is_refused(four_layers) -> None:
    for drop in ([0, 1, 2, 3], [7]):
        with pytest.raises(ValueError, match="not a proper subset"):
            drop_layers(four_layers, drop)
