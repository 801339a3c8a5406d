"""Perplexity by hand (also with a sliding window), metrics against the reference libraries,
batched generation, the evaluation pass, and reward-model scores."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from helpers import MULTI_REFS, PREDICTIONS, SINGLE_REFS, save_llama_reward
from rouge_score import rouge_scorer

from lmtune.config import METRICS
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import to_example
from lmtune.data.held_out import encode_held_out
from lmtune.data.prepare import TaskData, summary, tokenize_task_data
from lmtune.errors import DataError, ModelError
from lmtune.evaluate import metrics as M
from lmtune.evaluate.generate import generate
from lmtune.evaluate.metrics import ROUGE_TYPES, bleu, rouge
from lmtune.evaluate.perplexity import aggregate, perplexity, sliding_window_nll, sliding_windows
from lmtune.evaluate.reward import load_reward_model, reward_scores
from lmtune.evaluate.run import evaluate_model, metric_settings

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
    # perplexity scores every reference: "Bye" counts with both of its answers
    every_answer = [encoder.encode(v) for e in examples for v in e.each_reference()]
    assert len(every_answer) == 4
    assert result["perplexity"] == pytest.approx(
        perplexity(tiny_llama, every_answer, tokenizer.pad_token_id)["perplexity"]
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


# --------------------------------------------------------------------------- chrF, SQuAD and label metrics


def label_examples() -> list:
    rows = [
        {"prompt": "Review: great film.", "completion": "positive"},
        {"prompt": "Review: dull and slow.", "completion": "negative"},
        {"prompt": "Review: loved it.", "completion": "Positive"},
        {"prompt": "Review: a waste of time.", "completion": "negative"},
    ]
    return [to_example(r, "prompt_completion") for r in rows]


def test_evaluate_model_generation_metrics(tiny_llama, tokenizer):
    encoder = Encoder(tokenizer)
    wanted = ["chrf", "exact_match", "token_f1", "accuracy", "macro_f1"]
    examples = label_examples()
    result, predictions = evaluate_model(tiny_llama, tokenizer, encoder, examples, wanted, max_new_tokens=3)
    assert set(result) == {*wanted, "generation", "eval_time_s"}
    hyps = [p["prediction"] for p in predictions]
    refs = [list(e.references) for e in examples]
    assert result["chrf"] == M.chrf(hyps, refs) and set(result["chrf"]) == {"chrf"}
    assert result["exact_match"] == M.exact_match(hyps, refs)
    assert result["token_f1"] == M.token_f1(hyps, refs)
    assert result["accuracy"] == M.accuracy(hyps, refs)
    assert result["macro_f1"] == M.macro_f1(hyps, refs)
    assert all(isinstance(result[k], float) for k in ("exact_match", "token_f1", "accuracy", "macro_f1"))

    # free-text answers: accuracy and macro-F1 would mean nothing, so they are left out
    free = [to_example({"prompt": f"Say {w}.", "completion": f"I say {w} to you."}, "prompt_completion") for w in "ab"]
    result, _ = evaluate_model(tiny_llama, tokenizer, encoder, free, wanted, max_new_tokens=3)
    assert set(result) == {"chrf", "exact_match", "token_f1", "generation", "eval_time_s"}


def test_label_metrics_are_judged_per_task(tiny_llama, tokenizer):
    labels = [replace(e, task="sentiment") for e in label_examples()]
    free = [
        replace(
            to_example({"prompt": f"Describe {w}.", "completion": f"{w} is a word."}, "prompt_completion"), task="d"
        )
        for w in ("rain", "snow")
    ]
    result, predictions = evaluate_model(
        tiny_llama, tokenizer, Encoder(tokenizer), labels + free, ["accuracy", "macro_f1"], max_new_tokens=2
    )
    assert "accuracy" not in result and "macro_f1" not in result  # all answers together are not label-like
    sentiment = result["by_task"]["sentiment"]
    hyps = [p["prediction"] for p in predictions if p["task"] == "sentiment"]
    refs = [list(e.references) for e in labels]
    assert sentiment["accuracy"] == M.accuracy(hyps, refs)
    assert sentiment["macro_f1"] == M.macro_f1(hyps, refs)
    assert "accuracy" not in result["by_task"]["d"]


def test_metric_settings_name_every_metric():
    settings = metric_settings(stride=64)
    assert set(METRICS) <= set(settings)
    for name in METRICS:
        assert settings[name]["implementation"], name
    assert settings["perplexity"]["stride"] == 64
    assert settings["chrf"] == M.CHRF_SETTINGS
    assert {"char_order", "word_order", "beta"} <= set(settings["chrf"])
    assert "f1_score" in settings["macro_f1"]["function"] and "accuracy_score" in settings["accuracy"]["function"]


# --------------------------------------------------------------------------- sliding-window perplexity

WINDOW = 16
LONG_TEXT = (
    "Rain spread east across the valley on Monday morning, and by noon the river had risen above the "
    "old stone bridge. Farmers moved their sheep to the higher fields while the wind turned north. "
    "In the evening the clouds broke, the first stars came out, and the village counted its wet hay."
)


@pytest.fixture
def long_ids(tokenizer) -> list[int]:
    ids = Encoder(tokenizer, max_length=WINDOW).encode(to_example({"text": LONG_TEXT}, "text"), truncate=False)
    assert ids["labels"] == ids["input_ids"]  # text data: every token is a label
    assert len(ids["input_ids"]) > 3 * WINDOW
    return ids["input_ids"]


def hf_documentation_loop(model, ids: list[int], max_length: int, stride: int) -> tuple[float, int]:
    """The loop of the Transformers guide "Perplexity of fixed-length models", written out plainly."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        trg_len = end - prev_end  # only tokens the previous window did not score
        input_ids = torch.tensor([ids[begin:end]])
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(input_ids).logits
        shifted = target_ids[0, 1:]  # position t predicts token t+1
        nll_sum += F.cross_entropy(logits[0, :-1], shifted, ignore_index=-100, reduction="sum").item()
        n_tokens += int((shifted != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return nll_sum, n_tokens


@pytest.mark.parametrize("stride", [1, 5, 8, WINDOW - 1])
def test_sliding_window_equals_the_documented_loop(tiny_llama, long_ids, stride):
    ours = sliding_window_nll(tiny_llama, long_ids, WINDOW, stride, batch_size=4)
    theirs = hf_documentation_loop(tiny_llama, long_ids, WINDOW, stride)
    assert ours[1] == theirs[1] == len(long_ids) - 1
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5)


@pytest.mark.parametrize("stride", [1, 3, 8, WINDOW - 1, WINDOW, 100])
def test_sliding_window_scores_every_token_after_the_first_once(tiny_llama, long_ids, stride):
    windows = sliding_windows(len(long_ids), WINDOW, stride)
    scored = [t for begin, end, first in windows for t in range(first, end)]
    assert scored == list(range(1, len(long_ids)))  # each once, in order
    assert all(end - begin <= WINDOW and begin < first for begin, end, first in windows)
    assert windows[-1][1] == len(long_ids)
    _, count = sliding_window_nll(tiny_llama, long_ids, WINDOW, stride)
    assert count == len(long_ids) - 1


@pytest.mark.parametrize("stride", [WINDOW, WINDOW + 7])
def test_sliding_window_without_overlap_is_the_sum_of_independent_chunks(tiny_llama, tokenizer, long_ids, stride):
    # a stride of the whole window is taken as window - 1: chunks share one token, the last one scored
    # by a chunk being the first (unscored) context token of the next, so no token goes unscored
    step = WINDOW - 1
    chunks = [long_ids[b : b + WINDOW] for b in range(0, len(long_ids) - 1, step)]
    per_chunk = perplexity(tiny_llama, [{"input_ids": c, "labels": c} for c in chunks], tokenizer.pad_token_id)
    nll, count = sliding_window_nll(tiny_llama, long_ids, WINDOW, stride)
    assert count == sum(c for _, c in per_chunk["per_example"]) == len(long_ids) - 1
    assert nll == pytest.approx(sum(n for n, _ in per_chunk["per_example"]), rel=1e-5)


def test_sliding_window_on_a_short_sequence_is_plain_perplexity(tiny_llama, tokenizer, long_ids):
    short = long_ids[:WINDOW]
    plain = perplexity(tiny_llama, [{"input_ids": short, "labels": short}], tokenizer.pad_token_id)
    for stride in (1, 4, WINDOW):
        # the same sums; the plain path runs the head on labelled positions only, so the order differs
        assert sliding_window_nll(tiny_llama, short, WINDOW, stride) == pytest.approx(plain["per_example"][0], rel=1e-6)
    # masked labels are honoured: only the labelled positions are scored
    labels = [IGNORE] * 5 + short[5:]
    masked = perplexity(tiny_llama, [{"input_ids": short, "labels": labels}], tokenizer.pad_token_id)
    assert sliding_window_nll(tiny_llama, short, WINDOW, 4, labels=labels) == pytest.approx(
        masked["per_example"][0], rel=1e-6
    )


def test_sliding_window_is_better_than_truncation_and_needs_a_sane_window(tiny_llama, long_ids):
    with pytest.raises(ValueError, match="stride=0"):
        sliding_window_nll(tiny_llama, long_ids, WINDOW, 0)
    with pytest.raises(ValueError, match="max_length=1"):
        sliding_windows(10, 1, 1)
    assert sliding_windows(1, WINDOW, 4) == []
    tiny_llama.train()
    sliding_window_nll(tiny_llama, long_ids, WINDOW, 8)
    assert tiny_llama.training  # training mode restored


def test_evaluate_model_scores_long_text_with_a_sliding_window(tiny_llama, tokenizer, long_ids):
    encoder = Encoder(tokenizer, max_length=WINDOW)
    examples = [to_example({"text": LONG_TEXT}, "text"), to_example({"text": "Short and sweet."}, "text")]
    short = encoder.encode(examples[1])
    assert len(short["input_ids"]) < WINDOW
    expected_long = sliding_window_nll(tiny_llama, long_ids, WINDOW, 8)
    expected_short = perplexity(tiny_llama, [short], tokenizer.pad_token_id)["per_example"][0]
    expected = aggregate([expected_long, expected_short])

    truncated_rows = [encoder.encode(e) for e in examples]  # what the pipeline passes (rows cut at max_length)
    for encoded in (None, truncated_rows):
        result, predictions = evaluate_model(tiny_llama, tokenizer, encoder, examples, encoded=encoded, stride=8)
        assert predictions == []
        detail = result["perplexity_detail"]
        assert detail["tokens"] == len(long_ids) - 1 + len(short["input_ids"]) - 1
        assert detail["examples"] == 2
        assert detail["nll"] == pytest.approx(expected["nll"], rel=1e-5)
        assert result["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
        assert detail["sliding_window"] == {"examples": 1, "window": WINDOW, "stride": 8}
    # the truncated row alone would score far fewer tokens
    cut = perplexity(tiny_llama, truncated_rows[:1], tokenizer.pad_token_id)
    assert cut["tokens"] == WINDOW - 1 < len(long_ids) - 1


def text_task(tokenizer, lengths: dict[str, list[str]]) -> TaskData:
    split = {k: [to_example({"text": t}, "text") for t in v] for k, v in lengths.items()}
    report = {"sources": [], "splits": {"train": len(split["train"]), "eval": len(split["eval"]), "test": 0}}
    return TaskData(split["train"], split["eval"], [], "text", "eval.jsonl", report)


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_long_held_out_text_is_kept_for_the_sliding_window(tokenizer, policy):
    encoder = Encoder(tokenizer, max_length=WINDOW)
    data = text_task(tokenizer, {"train": ["A short one.", LONG_TEXT], "eval": ["Short held out.", LONG_TEXT]})
    n_long = len(encoder.encode(data.eval[1], truncate=False)["input_ids"])
    tok = tokenize_task_data(encoder, data, policy)
    assert tok.eval_examples == data.eval  # kept, whatever the policy
    assert len(tok.eval[1]["input_ids"]) == WINDOW  # its row, for whatever needs a row, is cut
    over = data.report["overlong"]
    assert over["eval"] == {"dropped": 0, "cut": 0, "tokens_cut": 0, "max_tokens_cut": 0, "sliding_window": 1}
    # the training set is unchanged: the policy applies
    if policy == "drop":
        assert len(tok.train) == 1 and over["train"] == {"dropped": 1, "truncated": 0, "tokens_cut": 0}
    else:
        assert len(tok.train) == 2
        assert over["train"] == {"dropped": 0, "truncated": 1, "tokens_cut": n_long - WINDOW}
    assert "eval 0 dropped / 0 cut / 1 scored by sliding window" in summary(data.report)


def test_long_held_out_answers_are_never_dropped(tokenizer):
    # no sliding window for an answer: it must fit in one row with some of its prompt, or the run stops
    encoder = Encoder(tokenizer, max_length=WINDOW)
    long_answer = replace(
        to_example({"prompt": "Tell me.", "completion": LONG_TEXT}, "prompt_completion"), source="e.jsonl:3"
    )
    with pytest.raises(DataError, match=r"^e\.jsonl:3: held-out answer is \d+ tokens; data.max_length=16 "):
        encode_held_out(encoder, [long_answer])


# --------------------------------------------------------------------------- reward model

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"what is the capital of france paris ? . a city".split()]
PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("What is the capital of France?", "A city."),
    ("What is it?", "The capital of France is Paris, a city."),
    ("France?", "Paris"),
    ("What is Paris?", "The capital of France."),
]


def save_bert_reward(folder, num_labels: int):
    """A tiny random BERT cross-encoder (text pairs with [SEP], like DeBERTa reward models) and its tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


@pytest.fixture(params=["bert", "llama", "llama-no-pad-id"])
def reward_dir(request, tmp_path, tokenizer):
    if request.param == "bert":
        return save_bert_reward(tmp_path / "bert", num_labels=1)
    # without a pad_token_id on its config, load_reward_model sets the tokenizer's
    return save_llama_reward(tmp_path / "llama", tokenizer, pad_on_config=request.param == "llama")


def direct_scores(model, tok, pairs, column: int) -> list[float]:
    out = []
    with torch.no_grad():
        for prompt, answer in pairs:
            out.append(model(**tok(prompt, answer, return_tensors="pt")).logits[0, column].item())
    return out


def test_reward_scores_equal_a_direct_model_call(reward_dir):
    model, tok = load_reward_model(str(reward_dir))
    assert not model.training and model.config.num_labels == 1
    assert model.config.pad_token_id == tok.pad_token_id is not None
    lengths = {len(tok(p, a)["input_ids"]) for p, a in PAIRS}
    assert len(lengths) > 2  # batches need padding
    expected = direct_scores(model, tok, PAIRS, column=0)
    prompts, answers = [p for p, _ in PAIRS], [a for _, a in PAIRS]
    for batch_size in (1, 2, 8):  # padding changes nothing
        scores = reward_scores(model, tok, prompts, answers, batch_size=batch_size)
        assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == len(PAIRS)  # the scores tell the pairs apart
    # the text pair is read as one: the question matters to the score of the same answer
    two = reward_scores(model, tok, ["What is the capital of France?", "What is it?"], ["Paris.", "Paris."])
    assert two[0] != two[1]


def test_two_label_reward_head_uses_the_last_label(tmp_path):
    model, tok = load_reward_model(str(save_bert_reward(tmp_path / "bert2", num_labels=2)))
    prompts, answers = [p for p, _ in PAIRS], [a for _, a in PAIRS]
    scores = reward_scores(model, tok, prompts, answers, batch_size=3)
    assert scores == pytest.approx(direct_scores(model, tok, PAIRS, column=1), abs=1e-5)
    assert scores != pytest.approx(direct_scores(model, tok, PAIRS, column=0), abs=1e-5)


def test_reward_model_names_that_cannot_load(tmp_path):
    with pytest.raises(ModelError, match="eval.reward_model: .*no such file or folder"):
        load_reward_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="eval.reward_model: 'someone/reward-model' .*cannot be reached"):
        load_reward_model("someone/reward-model")
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        reward_scores(None, None, ["a", "b"], ["c"])
