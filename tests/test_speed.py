"""The two speed-ups (packing, loss on labelled positions in chunks) give the results of the plain path.

Exactness on tiny random models in float32: a packed batch scores and trains each example as if it
ran alone; the chunked loss equals ``model(**batch).loss`` with the same gradients; a short run with
both on logs the losses of a run with both off. Where a speed-up cannot apply it is turned off.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_run_raw

from lmtune.config import validate_config
from lmtune.data.collate import PackCollator, PadCollator, packed_matches_alone
from lmtune.data.encode import IGNORE
from lmtune.loss import causal_lm_loss, loss_parts
from lmtune.pipeline import finetune
from lmtune.train import chunked_loss, training_arguments, use_packing

LENGTHS = (7, 12, 3, 9)  # four examples of different lengths


def examples(vocab: int, lengths: tuple[int, ...] = LENGTHS) -> list[dict[str, list[int]]]:
    """Seeded rows whose first third (the "prompt") carries no label; the third row is labelled throughout."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i, n in enumerate(lengths):
        ids = torch.randint(vocab, (n,), generator=g).tolist()
        prompt = 0 if i == 2 else n // 3
        rows.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return rows


def summed_nll(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Σ NLL over the batch's label tokens (each position predicts the next token)."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")


def grads(model: Any) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


def load(folder: Path, attention: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32).eval()


def with_lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    # random (not zero) B matrices, so the LoRA A gradients are not trivially zero
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, cfg)


# --------------------------------------------------------------------------- packing


def test_pack_collator_one_row_positions_restart_first_labels_masked():
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = PackCollator(row_tokens=5)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]  # 8 is not predicted from 7
    assert "attention_mask" not in batch and batch["use_cache"] is False


def test_pack_collator_rows_no_wider_than_the_longest_example_first_fit_decreasing():
    lengths = [5, 2, 3, 1, 4]
    rows = [{"input_ids": [10 * n + i for i in range(n)]} for n in lengths]
    batch = PackCollator(pad_token_id=0)(rows)
    # width 5: [5], [4 + 1], [3 + 2]; never more rows than examples, never wider than padding would be
    assert batch["input_ids"].tolist() == [[50, 51, 52, 53, 54], [40, 41, 42, 43, 10], [30, 31, 32, 20, 21]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    short = PackCollator(pad_token_id=0)([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5, 6]}])
    assert short["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]  # nothing fits beside: plain rows


def test_pack_collator_fills_a_rows_tail_with_an_unscored_segment_of_its_own():
    batch = PackCollator(pad_token_id=0)([{"input_ids": [1, 2, 3, 4]}, {"input_ids": [5, 6]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]  # the filler restarts at 0
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, 4], [IGNORE, 6, IGNORE, IGNORE]]


@pytest.mark.parametrize("row_tokens", [None, 10_000], ids=["rows-of-the-longest", "one-row"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_batch_scores_and_trains_each_example_as_if_alone(request, arch, attention, row_tokens):
    """Σ NLL and the gradients of a packed batch equal those of the examples run one by one.

    GPT-2 has absolute position embeddings: it passes only because they follow ``position_ids``.
    """
    model = load(request.getfixturevalue(f"tiny_{arch}_dir"), attention)
    rows = examples(model.config.vocab_size)
    weight = model.get_input_embeddings().weight if arch == "gpt2" else model.model.layers[0].self_attn.q_proj.weight

    batch = PackCollator(row_tokens=row_tokens)(rows)
    assert batch["input_ids"].shape[0] < len(rows)  # examples really share rows
    packed = summed_nll(model, batch)
    packed.backward()
    packed_grad = weight.grad.clone()
    model.zero_grad()
    alone = sum(summed_nll(model, PadCollator(0)([row])) for row in rows)
    alone.backward()

    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_grad, weight.grad, rtol=1e-5, atol=1e-5)
    assert weight.grad.abs().sum() > 0


def test_packing_kept_where_the_model_honours_it(tiny_llama_dir, tiny_gpt2_dir):
    assert packed_matches_alone(load(tiny_llama_dir)) and packed_matches_alone(load(tiny_gpt2_dir))
    assert packed_matches_alone(with_lora(load(tiny_llama_dir)))


def test_packing_turned_off_where_the_model_would_mix_examples(tiny_llama_dir, caplog):
    """A model whose forward drops ``position_ids`` would let packed examples see each other: padded batches."""
    model = load(tiny_llama_dir)
    forward = model.forward
    model.forward = lambda position_ids=None, **kwargs: forward(**kwargs)
    with caplog.at_level(logging.INFO, logger="lmtune.train"):
        assert use_packing(model) is False
    assert "training.packing is off" in caplog.text and "packed examples apart" in caplog.text


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_prompt_learning_turns_both_speedups_off(tiny_llama_dir, method, caplog, tmp_path):
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    cls = PromptTuningConfig if method == "prompt_tuning" else PrefixTuningConfig
    model = get_peft_model(load(tiny_llama_dir), cls(task_type="CAUSAL_LM", num_virtual_tokens=4))
    cfg = validate_config({"data": {"train": "train.jsonl"}, "training": {"output_dir": str(tmp_path)}})
    args = training_arguments(cfg)
    with caplog.at_level(logging.INFO, logger="lmtune.train"):
        assert use_packing(model) is False
        assert chunked_loss(model, args) is None
    assert "training.packing is off: " + method.upper() in caplog.text
    assert "training.chunked_loss is off: " + method.upper() in caplog.text


# --------------------------------------------------------------------------- loss on labelled positions


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("lora", [False, True], ids=["plain", "lora"])
def test_chunked_loss_equals_the_models_loss_and_gradients(tiny_llama_dir, lora, packing):
    model = load(tiny_llama_dir)
    model = with_lora(model) if lora else model
    parts = loss_parts(model)
    assert not isinstance(parts, str), parts
    rows = examples(model.get_input_embeddings().num_embeddings)
    batch = PackCollator()(rows) if packing else PadCollator(0)(rows)
    n_items = int((batch["labels"][:, 1:] != IGNORE).sum()) + 5  # as if part of a larger accumulated batch
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and (not lora or all("lora_" in n for n in trainable))

    for items in (None, torch.tensor(n_items)):
        extra = {} if items is None else {"num_items_in_batch": items}
        expected = model(**batch, **extra).loss
        expected.backward()
        expected_grads = grads(model)
        got = causal_lm_loss(*parts, batch, items, chunk_size=7)  # several chunks, the last one short
        got.backward()
        got_grads = grads(model)

        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
        assert set(got_grads) == set(expected_grads) == trainable
        for name in trainable:
            torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=1e-5, atol=1e-5, msg=name)


def test_chunked_loss_keeps_far_fewer_tensors_for_backward(tiny_llama_dir):
    """Activation memory, counted exactly: bytes autograd keeps for backward (parameters excluded)."""
    model = load(tiny_llama_dir)
    params = {p.data_ptr() for p in model.parameters()}
    batch = PadCollator(0)(examples(model.config.vocab_size))

    def saved_bytes(loss_fn: Any) -> int:
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.data_ptr() not in params:
                kept[t.data_ptr()] = max(kept.get(t.data_ptr(), 0), t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn()
        return sum(kept.values())

    standard = saved_bytes(lambda: model(**batch).loss)
    chunked = saved_bytes(lambda: causal_lm_loss(*loss_parts(model), batch))
    logits_bytes = batch["input_ids"].numel() * model.config.vocab_size * 4
    assert standard > logits_bytes  # the (tokens x vocab) float32 logits are kept ...
    assert chunked < logits_bytes / 10  # ... and here they are not


def test_chunked_loss_falls_back_for_adalora(tiny_llama_dir):
    from peft import AdaLoraConfig, get_peft_model

    model = get_peft_model(load(tiny_llama_dir), AdaLoraConfig(target_modules=["q_proj"], total_step=10))
    assert "orthogonal regulariser" in loss_parts(model)


# --------------------------------------------------------------------------- a short run, both on vs both off


def test_short_run_logs_the_same_losses_with_and_without_the_speedups(tmp_path, tiny_llama_dir, task_files):
    """4 steps of 2 accumulated batches, with evaluations: every logged loss and eval_loss agree to 1e-4."""
    logs, facts = {}, {}
    for on in (True, False):
        out = tmp_path / f"run-{on}"
        raw = tiny_run_raw(tiny_llama_dir, *task_files, out, method="lora")
        raw["training"].update(
            max_steps=4,
            gradient_accumulation_steps=2,
            eval_strategy="steps",
            eval_steps=2,
            per_device_eval_batch_size=2,  # 5 held-out rows: the last batch is short
            report_to="none",
            packing=on,
            chunked_loss=on,
        )
        raw["eval"].update(base=False, metrics=["perplexity"])
        metrics = finetune(validate_config(raw), echo=lambda *a: None)
        facts[on] = (metrics["run"]["packing"], metrics["run"]["chunked_loss"])
        logs[on] = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]

    assert facts == {True: (True, True), False: (False, False)}
    for key in ("loss", "eval_loss"):
        on = [(row["step"], row[key]) for row in logs[True] if key in row]
        off = [(row["step"], row[key]) for row in logs[False] if key in row]
        assert [s for s, _ in on] == [s for s, _ in off] == ([1, 2, 3, 4] if key == "loss" else [2, 4])
        for (_, a), (_, b) in zip(on, off, strict=True):
            assert a == pytest.approx(b, abs=1e-4), key
