"""Label masking with the real SmolLM2 tokenizer, and the padding collator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lmtune.data.collate import PadCollator, left_pad
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import Example, to_example
from lmtune.data.prepare import encode_all
from lmtune.errors import DataError

PROMPT = "What is the capital of France? Answer in one sentence."
ANSWER = "The capital of France is Paris."


@pytest.fixture
def example() -> Example:
    return to_example({"prompt": PROMPT, "completion": ANSWER}, "prompt_completion")


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of positions that carry a label."""
    runs, start = [], None
    for i, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_tokenizer_pads_with_eos(tokenizer):
    # The premise of the EOS tests below: the pad token *is* the EOS token.
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_chat_layout_trains_exactly_the_answer_and_eos(tokenizer, example):
    encoder = Encoder(tokenizer)
    assert encoder.template == "chat"  # auto: the tokenizer has a chat template
    enc = encoder.encode(example)
    ids, labels = enc["input_ids"], enc["labels"]
    prompt_ids = encoder.prompt_ids(example)
    n = len(prompt_ids)
    assert len(ids) == len(labels) > n > 0

    # the prompt tokens are the template's own rendering of the conversation up to the answer
    rendered_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(prompt_ids) == rendered_prompt
    assert ids[:n] == prompt_ids
    # ... and the whole sequence is the template's rendering of the full conversation
    rendered = tokenizer.apply_chat_template(list(example.messages), tokenize=False)
    assert tokenizer.decode(ids) == rendered
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]

    assert labels[:n] == [IGNORE] * n  # every prompt position is masked
    assert labels[n:] == ids[n:]  # every answer position is trained
    # what is trained is the answer, the end-of-turn (EOS) token and the template's newline
    assert tokenizer.decode(ids[n:]) == ANSWER + "<|im_end|>\n"
    assert ids[n:][-2:] == [tokenizer.eos_token_id, tokenizer("\n", add_special_tokens=False)["input_ids"][0]]
    # the EOS is trained on although it is also the pad token
    assert tokenizer.eos_token_id in [label for label in labels if label != IGNORE]


def test_system_prompt_goes_first_in_the_chat_layout(tokenizer, example):
    encoder = Encoder(tokenizer, system_prompt="You answer tersely.")
    enc = encoder.encode(example)
    text = tokenizer.decode(enc["input_ids"])
    assert text.startswith("<|im_start|>system\nYou answer tersely.<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in text  # the template's default system prompt is replaced
    n = len(encoder.prompt_ids(example))
    assert enc["labels"][:n] == [IGNORE] * n
    assert tokenizer.decode(enc["input_ids"][n:]) == ANSWER + "<|im_end|>\n"


def test_empty_system_prompt_drops_the_templates_default(tokenizer, example):
    default, empty = Encoder(tokenizer), Encoder(tokenizer, system_prompt="")
    text = tokenizer.decode(empty.encode(example)["input_ids"])
    # SmolLM2's template adds its default system message when there is none: an empty turn is shorter
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" + PROMPT)
    assert len(empty.encode(example)["input_ids"]) == len(default.encode(example)["input_ids"]) - 16
    assert empty.question_ids(PROMPT) == empty.prompt_ids(example)  # generation uses the same layout


NO_DEFAULT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
REFUSES_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + NO_DEFAULT
)


@pytest.mark.parametrize("template", [NO_DEFAULT, REFUSES_SYSTEM])
def test_empty_system_prompt_leaves_the_system_turn_out_where_that_is_shorter(tokenizer, example, template):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = template
    text = "".join(s.text for s in Encoder(tokenizer, system_prompt="").segments(example))
    assert text == f"<user>{PROMPT}<|im_end|><assistant>{ANSWER}<|im_end|>"


def test_plain_layout(tokenizer, example):
    encoder = Encoder(tokenizer, template="plain")
    enc = encoder.encode(example)
    ids, labels = enc["input_ids"], enc["labels"]
    prompt_ids = encoder.prompt_ids(example)
    n = len(prompt_ids)
    assert tokenizer.decode(prompt_ids) == f"### Instruction:\n{PROMPT}\n\n### Response:\n"
    assert encoder.prompt_text(example) == f"### Instruction:\n{PROMPT}\n\n### Response:\n"
    assert ids[:n] == prompt_ids
    assert labels[:n] == [IGNORE] * n
    assert labels[n:] == ids[n:]
    assert tokenizer.decode(ids[n:]) == ANSWER + tokenizer.eos_token
    assert ids[-1] == labels[-1] == tokenizer.eos_token_id


def test_auto_layout_is_plain_without_a_chat_template(plain_tokenizer, example):
    assert Encoder(plain_tokenizer).template == "plain"
    with pytest.raises(DataError, match="no chat template"):
        Encoder(plain_tokenizer, template="chat")


def test_plain_layout_joins_system_and_user_turns(tokenizer):
    ex = Example(
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        )
    )
    expected = "### Instruction:\nBe brief.\n\nHi\n\n### Response:\n"
    assert Encoder(tokenizer, template="plain").prompt_text(ex) == expected


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_train_on_prompt_trains_everything(tokenizer, example, template):
    enc = Encoder(tokenizer, template=template, train_on_prompt=True).encode(example)
    assert enc["labels"] == enc["input_ids"]
    # same tokens as without train_on_prompt: only the labels change
    assert enc["input_ids"] == Encoder(tokenizer, template=template).encode(example)["input_ids"]


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_text_shape_trains_every_token_and_ends_in_eos(tokenizer, template):
    ex = to_example({"text": "A plain document about the weather."}, "text")
    encoder = Encoder(tokenizer, template=template)
    enc = encoder.encode(ex)
    assert enc["labels"] == enc["input_ids"]
    assert enc["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(enc["input_ids"]) == "A plain document about the weather." + tokenizer.eos_token
    assert encoder.prompt_ids(ex) == []


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_truncation_at_max_length(tokenizer, example, template):
    full = Encoder(tokenizer, template=template).encode(example)
    for max_length in (5, len(full["input_ids"]) - 3):
        cut = Encoder(tokenizer, template=template, max_length=max_length).encode(example)
        assert len(cut["input_ids"]) == len(cut["labels"]) == max_length
        assert cut["input_ids"] == full["input_ids"][:max_length]
        assert cut["labels"] == full["labels"][:max_length]
    roomy = Encoder(tokenizer, template=template, max_length=10_000).encode(example)
    assert roomy == full


def test_encode_all_drops_or_truncates_overlong_examples(tokenizer, example):
    full = Encoder(tokenizer).encode(example)
    n = len(full["input_ids"])
    short = to_example({"text": "hi"}, "text")
    encoder = Encoder(tokenizer, max_length=5)  # the example's answer is cut off entirely
    assert len(encoder.encode(short)["input_ids"]) <= 5

    rows, kept, cut = encode_all(encoder, [example, short], "drop")
    assert kept == [short]
    assert cut == {"dropped": 1, "truncated": 0, "tokens_cut": 0}
    assert [{k: v.tolist() for k, v in r.items()} for r in rows] == [encoder.encode(short)]
    assert all(v.dtype == np.int32 for r in rows for v in r.values())

    # truncating this one would leave no answer token to learn from: it is dropped, not kept label-less
    rows, kept, cut = encode_all(encoder, [example, short], "truncate")
    assert kept == [short]
    assert cut == {"dropped": 1, "truncated": 0, "tokens_cut": 0}

    # with room for part of the answer, truncation keeps the example and counts the cut tokens
    prompt_len = len(encoder.prompt_ids(example))
    roomy = Encoder(tokenizer, max_length=prompt_len + 2)
    rows, kept, cut = encode_all(roomy, [example], "truncate")
    assert kept == [example]
    assert cut == {"dropped": 0, "truncated": 1, "tokens_cut": n - prompt_len - 2}
    assert rows[0]["input_ids"].tolist() == full["input_ids"][: prompt_len + 2]
    assert rows[0]["labels"].tolist()[-2:] == full["input_ids"][prompt_len : prompt_len + 2]


def test_no_training_example_with_an_answer_token_is_an_error(tokenizer, example):
    from lmtune.data.prepare import TaskData, tokenize_task_data

    data = TaskData(train=[example], eval=[example], test=[], shape="prompt_completion", eval_source="x")
    with pytest.raises(DataError, match="data.max_length: 5 tokens, and no training example keeps an answer token"):
        tokenize_task_data(Encoder(tokenizer, max_length=5), data, "truncate")
    with pytest.raises(DataError, match="data.max_length: 5 tokens, and no training example"):
        tokenize_task_data(Encoder(tokenizer, max_length=5), data, "drop")


def test_multi_turn_trains_every_assistant_turn_and_no_user_turn(tokenizer):
    turns = (
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    )
    ex = to_example({"messages": list(turns)}, "messages")
    encoder = Encoder(tokenizer)
    enc = encoder.encode(ex)
    ids, labels = enc["input_ids"], enc["labels"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(list(turns), tokenize=False)

    runs = trained_runs(labels)
    assert [tokenizer.decode(ids[a:b]) for a, b in runs] == ["Paris.<|im_end|>\n", "Rome.<|im_end|>\n"]
    for a, b in runs:
        assert labels[a:b] == ids[a:b]
    masked = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE])
    for turn in turns:
        assert (turn["content"] in masked) == (turn["role"] != "assistant")
    # the prompt for the final answer holds the first answer as context (masked)
    n = len(encoder.prompt_ids(ex))
    assert n == runs[-1][0]
    assert "Paris." in tokenizer.decode(encoder.prompt_ids(ex))


def test_question_ids_ask_for_an_answer(tokenizer):
    ids = Encoder(tokenizer).question_ids("Hello?")
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello?"}], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(ids) == expected


# --------------------------------------------------------------------------- collator


def test_pad_collator_right_pads_and_masks_only_padding(tokenizer):
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos
    features = [
        {"input_ids": [10, 11, 12, eos, 13], "labels": [IGNORE, IGNORE, 12, eos, 13]},  # EOS inside, trained
        {"input_ids": [20, 21, eos], "labels": [IGNORE, 21, eos]},  # EOS last, trained
        {"input_ids": [30], "labels": [30]},
    ]
    batch = PadCollator(tokenizer.pad_token_id)(features)
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, eos, 13],
        [20, 21, eos, eos, eos],
        [30, eos, eos, eos, eos],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [
        [IGNORE, IGNORE, 12, eos, 13],
        [IGNORE, 21, eos, IGNORE, IGNORE],
        [30, IGNORE, IGNORE, IGNORE, IGNORE],
    ]
    # labels are -100 exactly where the attention mask is 0, or where the example itself masked them
    for row, mask, feat in zip(batch["labels"].tolist(), batch["attention_mask"].tolist(), features, strict=True):
        n = len(feat["input_ids"])
        assert row[:n] == feat["labels"] and all(m == 0 for m in mask[n:]) and all(x == IGNORE for x in row[n:])
    assert {t.dtype for t in batch.values()} == {torch.long}


def test_pad_collator_on_real_encodings_keeps_eos_labels(tokenizer, example):
    encoder = Encoder(tokenizer)
    short = to_example({"prompt": "Hi", "completion": "Hello."}, "prompt_completion")
    rows = [encoder.encode(example), encoder.encode(short)]
    batch = PadCollator(tokenizer.pad_token_id)(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        labels = batch["labels"][i].tolist()
        assert labels[:n] == row["labels"]
        assert labels[n:] == [IGNORE] * (batch["input_ids"].shape[1] - n)
        assert labels.count(tokenizer.eos_token_id) == 1  # the answer's EOS, not the padding


def test_pad_collator_without_labels_and_to_multiple():
    batch = PadCollator(0, pad_to_multiple_of=4)([{"input_ids": [5, 6, 7, 8, 9]}, {"input_ids": [1]}])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"].tolist()[0] == [5, 6, 7, 8, 9, IGNORE, IGNORE, IGNORE]
    assert batch["attention_mask"].sum(dim=1).tolist() == [5, 1]


def test_left_pad():
    batch = left_pad([[1, 2, 3], [4]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
