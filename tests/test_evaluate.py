"""Perplexity by hand, BLEU / ROUGE against the reference libraries, batched generation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import to_example
from lmtune.evaluate.generate import generate
from lmtune.evaluate.metrics import ROUGE_TYPES, bleu, rouge
from lmtune.evaluate.perplexity import aggregate, perplexity
from lmtune.evaluate.run import evaluate_model

# --------------------------------------------------------------------------- perplexity


@pytest.fixture
def encoded(tokenizer) -> list[dict[str, list[int]]]:
    """Examples of quite different lengths and answer lengths (chat layout, real tokenizer)."""
    rows = [
        {"prompt": "Hi", "completion": "Hello."},
        {"prompt": "Write a long sentence about rain.", "completion": "Rain " * 30 + "falls all day in the valley."},
        {"prompt": "Count to five, please, and then stop counting right away.", "completion": "1 2 3 4 5"},
        {"prompt": "Name a colour.", "completion": "Blue, the colour of a clear sky on a warm summer day."},
        {"prompt": "Yes or no?", "completion": "No."},
    ]
    encoder = Encoder(tokenizer)
    out = [encoder.encode(to_example(r, "prompt_completion")) for r in rows]
    out.append(Encoder(tokenizer).encode(to_example({"text": "Plain text is scored on every token."}, "text")))
    return out


def nll_by_hand(model, row: dict[str, list[int]]) -> tuple[float, int]:
    """Summed NLL over the labelled positions of one unpadded example, and how many there are."""
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    total, count = 0.0, 0
    for t in range(1, len(row["input_ids"])):  # the token at t is predicted from position t-1
        if row["labels"][t] != IGNORE:
            total -= logp[t - 1, row["labels"][t]].item()
            count += 1
    return total, count


def test_perplexity_equals_hand_computation(tiny_llama, tokenizer, encoded):
    per_example = [nll_by_hand(tiny_llama, row) for row in encoded]
    total_nll = sum(n for n, _ in per_example)
    total_tokens = sum(c for _, c in per_example)
    expected = math.exp(total_nll / total_tokens)
    for batch_size in (1, 2, 4, 16):  # padding and batch boundaries change nothing
        result = perplexity(tiny_llama, encoded, tokenizer.pad_token_id, batch_size=batch_size)
        assert result["tokens"] == total_tokens
        assert result["nll"] == pytest.approx(total_nll / total_tokens, rel=1e-5)
        assert result["perplexity"] == pytest.approx(expected, rel=1e-5)
        # per example, in the order given: (summed NLL, scored tokens)
        assert [c for _, c in result["per_example"]] == [c for _, c in per_example]
        assert [n for n, _ in result["per_example"]] == pytest.approx([n for n, _ in per_example], rel=1e-5)
    # a random model over a 49k vocabulary is about as unsure as uniform guessing
    assert 0.2 * len(tokenizer) < expected < 5 * len(tokenizer)


def test_perplexity_is_token_weighted_not_a_mean_of_batch_means(tiny_llama, tokenizer, encoded):
    batch_size = 2
    ordered = sorted(encoded, key=lambda e: len(e["input_ids"]))  # the batches perplexity() forms
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    stats = [[nll_by_hand(tiny_llama, row) for row in batch] for batch in batches]
    counts = [sum(c for _, c in batch) for batch in stats]
    assert len(set(counts)) > 1  # batches hold different numbers of scored tokens
    mean_of_means = sum(sum(n for n, _ in b) / c for b, c in zip(stats, counts, strict=True)) / len(stats)
    token_weighted = sum(n for b in stats for n, _ in b) / sum(counts)

    result = perplexity(tiny_llama, encoded, tokenizer.pad_token_id, batch_size=batch_size)
    assert result["nll"] == pytest.approx(token_weighted, rel=1e-5)
    assert abs(result["nll"] - mean_of_means) > 1e-3
    assert result["perplexity"] != pytest.approx(math.exp(mean_of_means), rel=1e-4)


def test_perplexity_restores_training_mode(tiny_llama, tokenizer, encoded):
    tiny_llama.train()
    perplexity(tiny_llama, encoded[:2], tokenizer.pad_token_id)
    assert tiny_llama.training


# --------------------------------------------------------------------------- BLEU / ROUGE

PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "rain is expected in Oslo on Monday",
    "completely unrelated words here",
]
SINGLE_REFS = [
    ["the cat is sitting on the mat"],
    ["the quick brown fox jumped over the lazy dog"],
    ["Expect rain in Oslo on Monday, with light winds."],
    ["the sun shines in Lisbon"],
]
MULTI_REFS = [
    ["the cat is sitting on the mat", "a cat sat on the mat"],
    ["the quick brown fox jumped over the lazy dog"],
    ["Expect rain in Oslo on Monday, with light winds.", "Rain is expected in Oslo on Monday.", "Oslo: rain."],
    ["the sun shines in Lisbon"],
]


def reference_streams(refs: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, refs))
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


@pytest.mark.parametrize("refs", [SINGLE_REFS, MULTI_REFS], ids=["single", "multi"])
def test_bleu_equals_sacrebleu(refs):
    ours = bleu(PREDICTIONS, refs)
    theirs = sacrebleu.corpus_bleu(PREDICTIONS, reference_streams(refs))
    assert ours["bleu"] == pytest.approx(theirs.score / 100, abs=1e-12)
    assert ours["precisions"] == pytest.approx([p / 100 for p in theirs.precisions], abs=1e-12)
    assert len(ours["precisions"]) == 4
    assert ours["brevity_penalty"] == pytest.approx(theirs.bp)
    assert ours["length_ratio"] == pytest.approx(theirs.ratio)
    assert (ours["hyp_len"], ours["ref_len"]) == (theirs.sys_len, theirs.ref_len)
    assert 0 < ours["bleu"] < 1


def test_more_references_never_lower_bleu():
    assert bleu(PREDICTIONS, MULTI_REFS)["bleu"] > bleu(PREDICTIONS, SINGLE_REFS)["bleu"]
    # a prediction equal to one of its references scores perfectly
    hyp = "Rain is expected in Oslo on Monday ."
    perfect = bleu([hyp], [["Something else entirely .", hyp]])
    assert perfect["bleu"] == pytest.approx(1.0)


@pytest.mark.parametrize("refs", [SINGLE_REFS, MULTI_REFS], ids=["single", "multi"])
def test_rouge_equals_rouge_score(refs):
    ours = rouge(PREDICTIONS, refs)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    assert set(ours) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    for t in ROUGE_TYPES:
        # the best reference per example, then the mean over examples
        best = [max(scorer.score(r, p)[t].fmeasure for r in rs) for p, rs in zip(PREDICTIONS, refs, strict=True)]
        assert ours[t] == pytest.approx(sum(best) / len(best), abs=1e-12)
        multi = [scorer.score_multi(rs, p)[t].fmeasure for p, rs in zip(PREDICTIONS, refs, strict=True)]
        assert ours[t] == pytest.approx(sum(multi) / len(multi), abs=1e-12)
    assert 0 < ours["rouge1"] < 1


def test_rouge_uses_no_stemmer():
    # with a stemmer "jumps"/"jumped" would match; lmtune's settings say use_stemmer=False
    assert rouge(["jumps"], [["jumped"]])["rouge1"] == 0.0
    assert rouge(["jumps"], [["jumps"]])["rouge1"] == 1.0


# --------------------------------------------------------------------------- generation


def test_batched_left_padded_generation_equals_one_by_one(tiny_llama, tokenizer):
    encoder = Encoder(tokenizer)
    questions = ["Hi", "Write a haiku about the sea and the wind, please.", "2+2?", "What is the capital of Peru?"]
    prompts = [encoder.question_ids(q) for q in questions]
    assert len({len(p) for p in prompts}) == len(prompts)  # all different lengths -> left padding happens
    batched = generate(tiny_llama, tokenizer, prompts, max_new_tokens=10, batch_size=4)
    alone = [generate(tiny_llama, tokenizer, [p], max_new_tokens=10, batch_size=1)[0] for p in prompts]
    assert batched == alone  # same text, same stop flag, same token count, same order as given

    # and one by one, the answer is the plain greedy continuation of the unpadded prompt
    for prompt, gen in zip(prompts, alone, strict=True):
        ids = torch.tensor([prompt])
        new = []
        with torch.no_grad():
            for _ in range(10):
                nxt = int(tiny_llama(input_ids=ids).logits[0, -1].argmax())
                new.append(nxt)
                if nxt == tokenizer.eos_token_id:
                    break
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        stopped = new[-1] == tokenizer.eos_token_id
        assert gen.stopped == stopped
        assert gen.new_tokens == len(new)
        assert gen.text == tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True).strip()


def test_generation_stops_at_eos(tiny_llama, tokenizer):
    """A head that always prefers EOS: the answer stops at once, and is empty."""
    head = torch.nn.Linear(tiny_llama.config.hidden_size, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 10.0
    tiny_llama.lm_head = head
    prompts = [Encoder(tokenizer).question_ids(q) for q in ("Hi", "A longer question than that?")]
    for gen in generate(tiny_llama, tokenizer, prompts, max_new_tokens=5):
        assert gen.stopped and gen.new_tokens == 1 and gen.text == ""


def test_evaluate_model_shapes_and_predictions(tiny_llama, tokenizer):
    rows = [
        {"prompt": "Hi", "completion": "Hello."},
        {"prompt": "Bye", "completion": ["Goodbye.", "See you."]},
        {"prompt": "Thanks", "completion": "You are welcome."},
    ]
    examples = [to_example(r, "prompt_completion") for r in rows]
    encoder = Encoder(tokenizer)
    result, predictions = evaluate_model(tiny_llama, tokenizer, encoder, examples, max_samples=2, max_new_tokens=4)
    assert result["perplexity"] == pytest.approx(
        perplexity(tiny_llama, [encoder.encode(e) for e in examples], tokenizer.pad_token_id)["perplexity"]
    )
    assert result["perplexity_detail"]["examples"] == 3
    assert result["generation"]["samples"] == 2 == len(predictions)
    assert [p["prompt"] for p in predictions] == ["Hi", "Bye"]
    assert [p["reference"] for p in predictions] == ["Hello.", ["Goodbye.", "See you."]]
    hyps = [p["prediction"] for p in predictions]
    assert result["bleu"] == bleu(hyps, [["Hello."], ["Goodbye.", "See you."]])
    assert result["rouge"] == rouge(hyps, [["Hello."], ["Goodbye.", "See you."]])

    only_ppl, preds = evaluate_model(tiny_llama, tokenizer, encoder, examples, metrics=["perplexity"])
    assert preds == [] and set(only_ppl) == {"perplexity", "perplexity_detail", "eval_time_s"}


def test_evaluate_model_reports_every_task(tiny_llama, tokenizer):
    rows = [
        ({"prompt": "Add 1 and 2.", "completion": "3."}, "math"),
        ({"prompt": "Capital of France?", "completion": "Paris."}, "geo"),
        ({"prompt": "Add 4 and 4.", "completion": "8."}, "math"),
        ({"prompt": "Add 5 and 1.", "completion": "6."}, "math"),
        ({"prompt": "Capital of Peru?", "completion": "Lima."}, "geo"),
    ]
    examples = [replace(to_example(r, "prompt_completion"), task=t) for r, t in rows]
    encoder = Encoder(tokenizer)
    result, predictions = evaluate_model(tiny_llama, tokenizer, encoder, examples, max_samples=4, max_new_tokens=3)
    assert set(result["by_task"]) == {"math", "geo"}
    per_example = perplexity(tiny_llama, [encoder.encode(e) for e in examples], tokenizer.pad_token_id)["per_example"]
    for task, index in (("math", [0, 2, 3]), ("geo", [1, 4])):
        m = result["by_task"][task]
        expected = aggregate([per_example[i] for i in index])
        assert m["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
        assert m["perplexity_detail"]["examples"] == len(index)
        assert m["perplexity_detail"]["tokens"] == expected["tokens"]
    # generation samples are taken evenly across the tasks, then kept in the data's order
    assert [(p["prompt"], p["task"]) for p in predictions] == [
        ("Add 1 and 2.", "math"),
        ("Capital of France?", "geo"),
        ("Add 4 and 4.", "math"),
        ("Capital of Peru?", "geo"),
    ]
    assert result["by_task"]["math"]["generation"]["samples"] == 2 == result["by_task"]["geo"]["generation"]["samples"]
    math_preds = [p for p in predictions if p["task"] == "math"]
    assert result["by_task"]["math"]["bleu"] == bleu([p["prediction"] for p in math_preds], [["3."], ["8."]])
    assert "by_task" not in result["by_task"]["math"]

    one_task, _ = evaluate_model(tiny_llama, tokenizer, encoder, examples[:1] + examples[2:4], metrics=["perplexity"])
    assert "by_task" not in one_task
