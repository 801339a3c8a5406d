"""Held-out examples longer than data.max_length: kept and scored, the middle of the prompt cut, counted.

The real SmolLM2 tokenizer (chat layout); every number is derived from the uncut encoding.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import Example, to_example
from lmtune.data.held_out import MIN_PROMPT_TOKENS, cut_middle, encode_held_out, fit_held_out
from lmtune.data.prepare import TaskData, summary, tokenize_task_data
from lmtune.errors import ConfigError, DataError
from lmtune.evaluate import run as evaluate_run

INSTRUCTION = "Summarize the dialogue."
DIALOGUE = "\n".join(f"#Person{i % 2 + 1}#: I said thing number {i} about the weather." for i in range(30))
SUMMARY = "Two people talk about the weather."


def dialogue(answer: str | list[str] = SUMMARY, source: str = "data/eval.jsonl:17") -> Example:
    row = {"prompt": f"{INSTRUCTION}\n{DIALOGUE}", "completion": answer}
    return replace(to_example(row, "prompt_completion"), source=source)


def uncut(tokenizer: Any, example: Example) -> tuple[dict[str, list[int]], int]:
    """(the whole encoding, how many of its tokens are the prompt)."""
    encoder = Encoder(tokenizer, max_length=100_000)
    return encoder.encode(example, truncate=False), len(encoder.prompt_ids(example))


def task(train: list[Example], held_out: list[Example]) -> TaskData:
    report = {"sources": [], "splits": {"train": len(train), "eval": len(held_out), "test": 0}}
    return TaskData(train, held_out, [], "prompt_completion", "data/eval.jsonl", report)


def test_cut_middle_keeps_both_ends():
    assert cut_middle([1, 2, 3, 4, 5, 6, 7], 4) == [1, 2, 6, 7]
    assert cut_middle([1, 2, 3, 4, 5, 6, 7], 3) == [1, 6, 7]  # the odd token goes to the end
    assert cut_middle([1, 2, 3], 3) == [1, 2, 3] and cut_middle([1, 2], 5) == [1, 2]


def test_long_held_out_example_is_kept_scored_and_counted_as_cut(tokenizer):
    long = dialogue()
    short = to_example({"prompt": "Hi", "completion": "Hello."}, "prompt_completion")
    full, n_prompt = uncut(tokenizer, long)
    n = len(full["input_ids"])
    limit = n - 100  # the prompt loses 100 tokens from its middle
    encoder = Encoder(tokenizer, max_length=limit)
    data = task(train=[short, long], held_out=[long, short])

    tok = tokenize_task_data(encoder, data, "drop")

    assert tok.eval_examples == [long, short] and tok.eval_owner == [0, 1]  # kept, whatever data.overlong says
    row = {k: v.tolist() for k, v in tok.eval[0].items()}
    assert len(row["input_ids"]) == len(row["labels"]) == limit
    room, answer = limit - (n - n_prompt), n - n_prompt
    head, tail = room // 2, room - room // 2
    # the answer, whole and labelled, exactly the uncut encoding's answer tokens
    assert row["input_ids"][-answer:] == full["input_ids"][n_prompt:]
    assert row["labels"][-answer:] == full["input_ids"][n_prompt:]
    # the start and the end of the prompt, unlabelled
    assert row["input_ids"][:head] == full["input_ids"][:head]
    assert row["input_ids"][head:room] == full["input_ids"][n_prompt - tail : n_prompt]
    assert row["labels"][:room] == [IGNORE] * room
    start, end = tokenizer.decode(row["input_ids"][:head]), tokenizer.decode(row["input_ids"][head:room])
    assert INSTRUCTION in start and end.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "thing number 29 about the weather" in end and "thing number 15 " not in start + end

    over = data.report["overlong"]
    assert over["eval"] == {"dropped": 0, "cut": 1, "tokens_cut": 100, "max_tokens_cut": 100}
    # the training split keeps data.overlong: the long example is dropped there
    assert over["train"] == {"dropped": 1, "truncated": 0, "tokens_cut": 0} and len(tok.train) == 1
    text = summary(data.report)
    assert (
        "train 1 dropped / 0 truncated, eval 0 dropped / 1 cut from the middle of the prompt (mean 100, max 100 tokens)"
        in text
    )
    assert (
        f"eval: 1 cut from the middle of the prompt (mean 100, max 100 tokens) to fit data.max_length={limit}; "
        "raise data.max_length to score those examples whole"
    ) in data.report["warnings"]


def test_prompt_labels_stay_aligned_with_train_on_prompt(tokenizer):
    full, _ = uncut(tokenizer, dialogue())
    row, lost = fit_held_out(
        Encoder(tokenizer, max_length=len(full["input_ids"]) - 7, train_on_prompt=True), dialogue()
    )
    assert lost == 7 and row["labels"] == row["input_ids"]


def test_several_references_are_cut_one_by_one_and_counted_once(tokenizer):
    answers = [SUMMARY, SUMMARY + " They agree that it will rain tomorrow and again on Sunday."]
    grouped = dialogue(answers)
    lengths = [len(uncut(tokenizer, variant)[0]["input_ids"]) for variant in grouped.each_reference()]
    assert lengths[1] > lengths[0]
    limit = lengths[0] - 50
    encoder = Encoder(tokenizer, max_length=limit)

    rows, owner, counts = encode_held_out(encoder, [grouped])

    assert owner == [0, 0] and [len(r["input_ids"]) for r in rows] == [limit, limit]
    for row, variant in zip(rows, grouped.each_reference(), strict=True):
        full, n_prompt = uncut(tokenizer, variant)
        assert row["labels"].tolist()[-(len(full["input_ids"]) - n_prompt) :] == full["input_ids"][n_prompt:]
    most = lengths[1] - limit  # the example counts once, with the row that lost the most
    assert counts == {"dropped": 0, "cut": 1, "tokens_cut": most, "max_tokens_cut": most}


def test_an_answer_that_cannot_fit_is_one_line_naming_the_row(tokenizer):
    long_answer = " ".join(f"point {i}," for i in range(60))
    example = dialogue(long_answer)
    full, n_prompt = uncut(tokenizer, example)
    answer = len(full["input_ids"]) - n_prompt
    limit = answer + MIN_PROMPT_TOKENS - 1
    with pytest.raises(DataError) as caught:
        encode_held_out(Encoder(tokenizer, max_length=limit), [example])
    assert str(caught.value) == (
        f"data/eval.jsonl:17: held-out answer is {answer} tokens; data.max_length={limit} cannot hold it with its "
        f"prompt; raise data.max_length to at least {answer + MIN_PROMPT_TOKENS}"
    )
    rows, _, counts = encode_held_out(Encoder(tokenizer, max_length=limit + 1), [example])  # the least that fits
    assert len(rows[0]["input_ids"]) == limit + 1 and counts["cut"] == 1


# --------------------------------------------------------------------------- generation prompts


@pytest.fixture
def short_context_llama(tokenizer: Any) -> Any:
    """A tiny random Llama whose context is 64 positions."""
    from helpers import tiny_llama_config
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, max_position_embeddings=64)).eval()


def test_generation_prompts_are_cut_to_the_models_context(short_context_llama, tokenizer, monkeypatch):
    encoder = Encoder(tokenizer, max_length=56)
    long, short = dialogue(), to_example({"prompt": "Hi", "completion": "Hello."}, "prompt_completion")
    given: list[list[int]] = []
    real = evaluate_run.generate
    monkeypatch.setattr(
        evaluate_run, "generate", lambda m, t, prompts, *a: given.extend(prompts) or real(m, t, prompts, *a)
    )

    result, predictions = evaluate_run.evaluate_model(
        short_context_llama, tokenizer, encoder, [long, short], ["perplexity", "bleu"], max_new_tokens=8
    )

    room = 64 - 8
    assert given == [cut_middle(encoder.prompt_ids(long), room), encoder.prompt_ids(short)]
    assert len(given[0]) == room < len(encoder.prompt_ids(long))
    assert result["generation"]["prompts_cut"] == 1 and len(predictions) == 2
    assert result["perplexity_detail"]["examples"] == 2  # the long row, cut to data.max_length, is scored too
    short_only, _ = evaluate_run.evaluate_model(
        short_context_llama, tokenizer, encoder, [short], ["bleu"], max_new_tokens=8
    )
    assert "prompts_cut" not in short_only["generation"]
    with pytest.raises(ConfigError, match="^eval.max_new_tokens=60 leaves 4 of the model's 64 positions"):
        evaluate_run.evaluate_model(short_context_llama, tokenizer, encoder, [long], ["bleu"], max_new_tokens=60)


def test_a_run_scores_the_long_held_out_example_and_says_it_was_cut(tmp_path, tiny_llama_dir, tokenizer):
    """Through a whole run: the long example is among the scored ones (perplexity and generation), and
    metrics.json and the printed table count it as cut."""
    from helpers import TRAIN_ROWS, tiny_run_raw, write_jsonl

    from lmtune.config import validate_config
    from lmtune.pipeline import finetune

    long = {"prompt": f"{INSTRUCTION}\n{DIALOGUE}", "completion": SUMMARY}
    held_out = [long, {"prompt": "Add 5 and 1.", "completion": "5 plus 1 is 6."}]
    full, _ = uncut(tokenizer, dialogue())
    raw = tiny_run_raw(tiny_llama_dir, write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS),
                       write_jsonl(tmp_path / "eval.jsonl", held_out), tmp_path / "run")  # fmt: skip
    raw["data"]["max_length"] = len(full["input_ids"]) - 50
    lines: list[str] = []
    metrics = finetune(validate_config(raw), echo=lines.append)

    assert metrics["run"]["eval_examples"] == 2
    assert metrics["run"]["held_out_cut"] == {"cut": 1, "tokens_cut": 50, "max_tokens_cut": 50}
    for model in ("base", "finetuned"):
        assert metrics[model]["perplexity_detail"]["examples"] == 2 and metrics[model]["generation"]["samples"] == 2
    printed = "\n".join(lines)
    assert "held-out examples: all 2 scored; 1 cut from the middle of the prompt to fit data.max_length " in printed
    assert "(mean 50, max 50 tokens)" in printed
