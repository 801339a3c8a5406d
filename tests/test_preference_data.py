"""Preference data: pairs, HH-RLHF transcripts, KTO rows, prompt-only rows; their errors; TRL's rows.

Every test writes its own small data and checks whole structures, not fragments.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lmtune.config import DataConfig
from lmtune.data import clean as C
from lmtune.data.formats import Example, read_examples, to_example
from lmtune.data.preference import data_problem, shape_family, to_unpaired, trl_rows
from lmtune.data.prepare import load_task_data, summary
from lmtune.data.split import group_references, split
from lmtune.errors import DataError, LmtuneError


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def pref(prompt: Any, chosen: Any, rejected: Any, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def hh(*turns: str) -> str:
    """``hh("Q", "A", "Q2", "A2")`` -> "\\n\\nHuman: Q\\n\\nAssistant: A\\n\\nHuman: Q2\\n\\nAssistant: A2"."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def pair(prompt: str, chosen: str, rejected: str, **kw: Any) -> Example:
    return Example(messages=(user(prompt), assistant(chosen)), references=(chosen,), rejected=rejected, **kw)


def error_of(path: Path, shape: str = "auto") -> str:
    with pytest.raises(DataError) as e:
        read_examples(path, shape)
    message = str(e.value)
    assert "\n" not in message
    assert isinstance(e.value, LmtuneError) and e.value.exit_code == 2
    return message


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("row", "shape", "expected"),
    [
        (
            pref("Capital of France?", "Paris.", "Lyon."),
            "preference",
            pair("Capital of France?", "Paris.", "Lyon."),
        ),
        (
            pref([user("Capital of France?")], [assistant("Paris.")], [assistant("Lyon.")]),
            "preference",
            pair("Capital of France?", "Paris.", "Lyon."),
        ),
        (
            pref([system("Be brief."), user("Hi"), assistant("Hello."), user("Capital?")], "Paris.", [assistant("x")]),
            "preference",
            Example(
                messages=(system("Be brief."), user("Hi"), assistant("Hello."), user("Capital?"), assistant("Paris.")),
                references=("Paris.",),
                rejected="x",
            ),
        ),
        (
            pref("Capital?", "Paris.", "Lyon.", system="Be brief."),
            "preference",
            Example(
                messages=(system("Be brief."), user("Capital?"), assistant("Paris.")),
                references=("Paris.",),
                rejected="Lyon.",
            ),
        ),
        (  # UltraFeedback-binarized: prompt text, chosen / rejected whole conversations
            pref("Capital?", [user("Capital?"), assistant("Paris.")], [user("Capital?"), assistant("Lyon.")]),
            "preference",
            pair("Capital?", "Paris.", "Lyon."),
        ),
        (
            {"prompt": "Capital?", "completion": "Paris.", "label": True},
            "kto",
            Example(messages=(user("Capital?"), assistant("Paris.")), references=("Paris.",), label=True),
        ),
        (
            {"prompt": [user("Capital?")], "completion": [assistant("Lyon.")], "label": False},
            "kto",
            Example(messages=(user("Capital?"), assistant("Lyon.")), references=("Lyon.",), label=False),
        ),
        (
            {"prompt": "Janet has 3 apples...", "answer": "#### 5", "level": 2},
            "prompt_only",
            Example(
                messages=(user("Janet has 3 apples..."),),
                references=("#### 5",),
                extra=(("answer", "#### 5"), ("level", 2)),
            ),
        ),
        (
            {"prompt": [system("Think."), user("2+2?")], "tags": ["math"]},
            "prompt_only",
            Example(messages=(system("Think."), user("2+2?")), extra=(("tags", ["math"]),)),
        ),
        (
            {"chosen": [user("Hi"), assistant("Hello!")], "rejected": [user("Hi"), assistant("Go away.")]},
            "hh_rlhf",
            pair("Hi", "Hello!", "Go away."),
        ),
    ],
    ids=[
        "pref-text",
        "pref-messages",
        "pref-multi-turn-prompt",
        "pref-system-field",
        "pref-whole-conversations",
        "kto-text",
        "kto-messages",
        "prompt-only-extras",
        "prompt-only-messages",
        "hh-messages",
    ],
)
def test_shapes_are_detected_and_read(jsonl, row, shape, expected):
    path = jsonl("rows.jsonl", [row])
    data = read_examples(path, task="t")
    assert data.shape == shape
    assert data.examples == [Example(**{**expected.__dict__, "task": "t", "source": f"{path}:1"})]
    assert read_examples(path, shape, task="t").examples == data.examples  # naming the shape: the same


def test_example_helpers():
    p = pair("Q", "good", "bad")
    assert p.is_preference and p.prompt_messages == (user("Q"),) and p.prompt == "Q"
    only = to_example({"prompt": "Q", "answer": "7", "n": 1}, "prompt_only")
    assert not only.is_preference and only.prompt_messages == (user("Q"),) and only.prompt == "Q"
    assert only.extras == {"answer": "7", "n": 1}
    assert Example(messages=(user("Q"), assistant("A"))).extras == {}
    assert [shape_family(s) for s in ("text", "preference", "hh_rlhf", "kto", "prompt_only", "alpaca")] == [
        "text", "paired", "paired", "unpaired", "prompt", "conversation",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "shape"),
    [
        ({"prompt": "q", "completion": "a"}, "prompt_completion"),  # no label: plain supervised data
        ({"prompt": "q", "completion": "a", "label": True}, "kto"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "completion": "c"}, "preference"),
        ({"question": "q", "answer": "a", "rationale": "r"}, "cot"),
        ({"prompt": "q", "answer": "a"}, "prompt_only"),
        ({"prompt": "q", "input": "extra context"}, "prompt_only"),
    ],
)
def test_detection_order(jsonl, row, shape):
    assert read_examples(jsonl("rows.jsonl", [row])).shape == shape


@pytest.mark.parametrize(
    "row", [{"prompt": "q", "output": "a"}, {"prompt": "q", "chosen": "a"}, {"prompt": "q", "response": "a"}]
)
def test_a_prompt_with_an_unknown_answer_field_is_not_taken_for_prompt_only(jsonl, row):
    message = error_of(jsonl("rows.jsonl", [row]))
    assert "rows.jsonl:1: cannot tell the data shape" in message
    assert "prompt+chosen+rejected" in message


# --------------------------------------------------------------------------- HH-RLHF


HH_ROWS = [
    # (a) one turn
    {"chosen": hh("What is 2+2?", "It is 4."), "rejected": hh("What is 2+2?", "It is 5.")},
    # (b) several turns before the answers; chosen's first marker without its leading blank line
    {
        "chosen": "Human: Hi there.\n\nAssistant: Hello! How can I help?"
        "\n\nHuman: Recommend a book.\n\nAssistant: Try 'Dune'.",
        "rejected": hh("Hi there.", "Hello! How can I help?", "Recommend a book.", "No."),
    },
    # (c) both answers begin with the same words: a character-wise common prefix would cut inside them
    {
        "chosen": hh("What is the capital of France?", "Sure, the capital of France is Paris."),
        "rejected": hh("What is the capital of France?", "Sure, I don't know."),
    },
]


def test_hh_rlhf_rows_become_exact_prompts_and_answers(jsonl):
    assert HH_ROWS[2]["chosen"] == (
        "\n\nHuman: What is the capital of France?\n\nAssistant: Sure, the capital of France is Paris."
    )
    path = jsonl("hh.jsonl", HH_ROWS)
    data = read_examples(path)
    assert data.shape == "hh_rlhf"
    paris = "Sure, the capital of France is Paris."
    assert data.examples == [
        Example(
            messages=(user("What is 2+2?"), assistant("It is 4.")),
            references=("It is 4.",),
            rejected="It is 5.",
            task="hh",
            source=f"{path}:1",
        ),
        Example(
            messages=(
                user("Hi there."),
                assistant("Hello! How can I help?"),
                user("Recommend a book."),
                assistant("Try 'Dune'."),
            ),
            references=("Try 'Dune'.",),
            rejected="No.",
            task="hh",
            source=f"{path}:2",
        ),
        Example(
            messages=(user("What is the capital of France?"), assistant(paris)),
            references=(paris,),
            rejected="Sure, I don't know.",
            task="hh",
            source=f"{path}:3",
        ),
    ]
    # what the trainers get: the whole answers, not what follows a shared "Sure,"
    assert trl_rows(data.examples[2:], "dpo") == [
        {
            "prompt": [user("What is the capital of France?")],
            "chosen": [assistant("Sure, the capital of France is Paris.")],
            "rejected": [assistant("Sure, I don't know.")],
        }
    ]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"chosen": hh("Q1", "A"), "rejected": hh("Q2", "B")}, "rejected", "shares no user (Human) turn"),
        (
            {"chosen": hh("Q", "A", "Q2", "A2"), "rejected": hh("Q", "B")},
            "chosen",
            "after the prompt the two share (1 turn), expected one assistant answer, found 3 turns",
        ),
        ({"chosen": hh("Q", "A"), "rejected": hh("Q", "A", "Q2", "B")}, "rejected", "found 3 turns"),
        ({"chosen": hh("Q", "A", "Q2"), "rejected": hh("Q", "B")}, "chosen", "found 2 turns (assistant, user)"),
        ({"chosen": hh("Q", " Same. "), "rejected": hh("Q", "Same.")}, "rejected", "the same answer as 'chosen'"),
        ({"chosen": hh("Q", ""), "rejected": hh("Q", "B")}, "chosen", "empty answer"),
        ({"chosen": "Q: what? A: this", "rejected": hh("Q", "B")}, "chosen", "expected a transcript"),
        ({"chosen": 5, "rejected": hh("Q", "B")}, "chosen", "found a number"),
        ({"chosen": hh("Q", "A"), "rejected": "  "}, "rejected", "found empty text"),
    ],
    ids=[
        "no-shared-prompt",
        "chosen-longer",
        "rejected-longer",
        "ends-with-human",
        "identical",
        "empty",
        "not-hh",
        "number",
        "blank",
    ],
)
def test_hh_rlhf_errors(jsonl, row, field, words):
    path = jsonl("hh.jsonl", [HH_ROWS[0], row])
    message = error_of(path)
    assert message.startswith(f"{path}:2: field '{field}': ")
    assert words in message


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("shape", "good", "bad", "expected"),
    [
        ("preference", pref("q", "a", "b"), {"prompt": "q", "chosen": "a"}, "field 'rejected': missing"),
        (
            "preference",
            pref("q", "a", "b"),
            pref("q", 3, "b"),
            "field 'chosen': expected text or a list holding one assistant message, found a number",
        ),
        (
            "preference",
            pref("q", "a", "b"),
            pref("q", [assistant("a"), assistant("b")], "b"),
            "field 'chosen': expected text or a list holding one assistant message, found a list of 2",
        ),
        (
            "preference",
            pref("q", "a", "b"),
            pref("q", [user("a")], "b"),
            "field 'chosen[0].role': expected 'assistant', found 'user'",
        ),
        (
            "preference",
            pref("q", "a", "b"),
            pref(7, "a", "b"),
            "field 'prompt': expected text or a non-empty list of {role, content}, found a number",
        ),
        (
            "preference",
            pref("q", "a", "b"),
            pref([user("q"), assistant("a")], "a", "b"),
            "field 'prompt': the last turn must be the user's",
        ),
        (
            "preference",
            pref("q", "a", "b"),
            pref([{"role": "bot", "content": "q"}], "a", "b"),
            "field 'prompt[0].role': unknown role 'bot'",
        ),
        ("preference", pref("q", "a", "b"), pref("q", "  ", "b"), "field 'chosen': empty text"),
        ("preference", pref("q", "a", "b"), pref("q", "a", ""), "field 'rejected': empty text"),
        ("preference", pref("q", "a", "b"), pref("q", [assistant(" ")], "b"), "field 'chosen[0].content': empty text"),
        (
            "preference",
            pref("q", "a", "b"),
            pref("q", " Same answer.\n", "Same answer."),
            "field 'rejected': the same answer as 'chosen'",
        ),
        ("preference", pref("q", "a", "b"), pref("  ", "a", "b"), "field 'prompt': empty text"),
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": True},
            {"prompt": "q", "completion": "a"},
            "field 'label': missing",
        ),
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": True},
            {"prompt": "q", "completion": "a", "label": "yes"},
            "field 'label': expected true or false (a JSON boolean: is the completion desirable), found 'yes'",
        ),
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": True},
            {"prompt": "q", "completion": "a", "label": 1},
            "field 'label': expected true or false (a JSON boolean: is the completion desirable), found 1",
        ),
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": True},
            {"prompt": "q", "completion": "a", "label": None},
            "field 'label': expected true or false (a JSON boolean: is the completion desirable), found null",
        ),
        (
            "kto",
            {"prompt": "q", "completion": "a", "label": True},
            {"prompt": "q", "completion": " ", "label": False},
            "field 'completion': empty text",
        ),
        ("prompt_only", {"prompt": "q"}, {"prompt": ""}, "field 'prompt': empty text"),
        ("prompt_only", {"prompt": "q"}, {"prompt": ["q"]}, "field 'prompt[0]': expected {role, content}, found text"),
        (
            "prompt_only",
            {"prompt": "q"},
            {"prompt": "q", "completion": "a"},
            "field 'completion': a prompt_only row has no answer field",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(jsonl, shape, good, bad, expected):
    path = jsonl("bad.jsonl", [good, good, bad])
    assert f"{path}:3: {expected}" in error_of(path, shape)


def test_auto_detected_files_report_rows_of_another_shape(jsonl):
    kto = {"prompt": "q", "completion": "a", "label": True}
    path = jsonl("bad.jsonl", [kto, {"prompt": "q", "completion": "a"}])
    assert f"{path}:2: rows of mixed shapes: this row is 'prompt_completion'" in error_of(path)
    # a supervised row missing its answer is reported as such, not as a prompt_only row
    path = jsonl("bad.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q"}])
    assert f"{path}:2: field 'completion': missing" in error_of(path)
    path = jsonl("bad.jsonl", [{"prompt": "q"}, {"prompt": "q", "completion": "a"}])
    assert f"{path}:2: rows of mixed shapes: this row is 'prompt_completion'" in error_of(path)


def test_errors_in_many_rows_are_collected(jsonl):
    rows = [pref("q", "a", "b")] + [pref("q", "same", "same")] * 12
    message = error_of(jsonl("bad.jsonl", rows))
    assert message.count("field 'rejected': the same answer") == 10
    assert "first 10 shown" in message


# --------------------------------------------------------------------------- conversions


def test_to_unpaired():
    p = pair("Q", "good", "bad", task="t", source="f.jsonl:4")
    p = Example(**{**p.__dict__, "messages": (system("S"), *p.messages)})
    kto = Example(messages=(user("R"), assistant("ok")), references=("ok",), label=False)
    assert to_unpaired([p, kto]) == [
        Example(
            messages=(system("S"), user("Q"), assistant("good")),
            references=("good",),
            task="t",
            source="f.jsonl:4",
            label=True,
        ),
        Example(
            messages=(system("S"), user("Q"), assistant("bad")),
            references=("bad",),
            task="t",
            source="f.jsonl:4",
            label=False,
        ),
        kto,
    ]


def test_trl_rows_for_paired_objectives():
    examples = [
        Example(messages=(system("S"), user("Q"), assistant("good")), references=("good",), rejected="bad"),
        pair("Q2", "yes", "no"),
    ]
    expected = [
        {"prompt": [system("S"), user("Q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        {"prompt": [user("Q2")], "chosen": [assistant("yes")], "rejected": [assistant("no")]},
    ]
    for objective in ("dpo", "orpo", "simpo", "reward"):
        assert trl_rows(examples, objective) == expected
    rows = trl_rows(examples, "dpo")
    rows[0]["prompt"][0]["content"] = "changed"  # fresh dicts: the examples are untouched
    assert examples[0].messages[0] == system("S")


def test_trl_rows_for_kto_unpairs_pairs():
    examples = [
        pair("Q", "good", "bad"),
        Example(messages=(user("R"), assistant("meh")), references=("meh",), label=False),
    ]
    assert trl_rows(examples, "kto") == [
        {"prompt": [user("Q")], "completion": [assistant("good")], "label": True},
        {"prompt": [user("Q")], "completion": [assistant("bad")], "label": False},
        {"prompt": [user("R")], "completion": [assistant("meh")], "label": False},
    ]


def test_trl_rows_for_grpo():
    examples = [
        to_example({"prompt": "2+3?", "answer": "5", "level": 1}, "prompt_only"),
        to_example({"prompt": [system("Think."), user("1+1?")], "source_id": "x"}, "prompt_only"),
        to_example({"prompt": "Capital?", "completion": "Paris."}, "prompt_completion"),
        pair("Q", "good", "bad"),
    ]
    assert trl_rows(examples, "grpo") == [
        {"prompt": [user("2+3?")], "answer": "5", "level": 1, "source_id": None},
        {"prompt": [system("Think."), user("1+1?")], "answer": None, "level": None, "source_id": "x"},
        {"prompt": [user("Capital?")], "answer": "Paris.", "level": None, "source_id": None},
        {"prompt": [user("Q")], "answer": "good", "level": None, "source_id": None},
    ]


def test_trl_rows_refuses_data_the_objective_cannot_use():
    sft = Example(messages=(user("Q"), assistant("A")), references=("A",), source="t.jsonl:3")
    with pytest.raises(DataError, match=r"^t.jsonl:3: objective 'dpo' needs preference pairs"):
        trl_rows([pair("a", "b", "c"), sft], "dpo")
    with pytest.raises(DataError, match=r"^t.jsonl:3: objective 'kto' needs answers labelled"):
        trl_rows([sft], "kto")
    with pytest.raises(DataError, match="'text' row has no prompt"):
        trl_rows([Example(text="doc")], "grpo")
    with pytest.raises(ValueError, match="unknown objective 'ppo'"):
        trl_rows([pair("a", "b", "c")], "ppo")


def test_trl_rows_render_with_a_chat_template(tokenizer):
    """The conversational rows are what a chat template takes: prompt + answer extends the prompt."""
    (row,) = trl_rows(
        [Example(messages=(system("S"), user("Q"), assistant("good")), references=("good",), rejected="bad")], "dpo"
    )
    prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    for key in ("chosen", "rejected"):
        whole = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=False)
        assert whole.startswith(prompt)
        assert row[key][0]["content"] in whole[len(prompt) :]


# --------------------------------------------------------------------------- cleaning and splitting


def test_dedup_keeps_distinct_pairs_and_labels_sharing_a_prompt():
    rows = [
        pair("Q", "good", "bad"),
        pair("Q", "good", "worse"),  # same prompt and chosen, another rejected: a distinct pair
        pair("q ", "GOOD", "Bad"),  # the first pair again, once canonicalised
        pair("Q", "better", "bad"),
        Example(messages=(user("Q"), assistant("good")), references=("good",), label=True),
        Example(messages=(user("Q"), assistant("good")), references=("good",), label=False),
    ]
    kept, n = C.drop_duplicates(rows)
    assert kept == [rows[0], rows[1], rows[3], rows[4], rows[5]] and n == 1
    # every other row keeps the key it always had (splits and mixtures do not move)
    sft = Example(messages=(user("Q"), assistant("good")), references=("good",))
    assert C.row_key(sft) == hashlib.sha256(f"{C.prompt_key(sft)}\x00good".encode()).hexdigest()
    assert len({C.row_key(r) for r in [*rows, sft]}) == 6


def test_cleaning_preference_and_prompt_only_rows():
    p = pair("Caf" + "e\u0301?", "Oui\u200b", " Non\r\n")
    n = C.normalize_example(p)
    assert (n.messages, n.references, n.rejected) == ((user("Caf\u00e9?"), assistant("Oui")), ("Oui",), "Non")
    assert C.is_empty(C.normalize_example(pair("Q", "good", "\u200b")))  # only invisible characters
    assert C.is_empty(pair("Q", "good", " ")) and not C.is_empty(p)
    only = to_example({"prompt": "Q"}, "prompt_only")
    assert not C.is_empty(only)
    assert C.prompt_key(only) == C.prompt_key(pair("Q", "a", "b")) == "user: q"
    kept, dropped = C.clean([only, only, p], normalize=True, dedup=True, near_dedup=True, threshold=0.85)
    assert kept == [only, n] and dropped == {"empty": 0, "duplicate": 1, "near_duplicate": 0}
    # near-duplicates: a pair's rejected answer counts
    prompt, chosen = "Name a fruit that is red and sweet.", "A strawberry is red and sweet."
    rejected = [
        "A lemon is yellow and sour, so it is not what you asked for.",
        "Carrots are orange vegetables grown underground.",
    ]
    a, b = pair(prompt, chosen, rejected[0]), pair(prompt, chosen, rejected[1])
    assert C.drop_near_duplicates([a, b], 0.85) == ([a, b], 0)
    assert C.drop_near_duplicates([a, pair(prompt, chosen, rejected[0] + "!")], 0.85) == ([a], 1)
    # preference rows have no "class": never classification-like, never stratified
    assert not C.is_classification_like([pair(f"Q{i}", "yes", "no") for i in range(50)])


def test_held_out_pairs_are_not_grouped():
    rows = [pair("Q", "good", "bad"), pair("Q", "good", "worse"), pair("Q", "fine", "bad")]
    kto = [
        Example(messages=(user("Q"), assistant(a)), references=(a,), label=lab)
        for a, lab in (("x", True), ("y", False))
    ]
    only = [to_example({"prompt": "Q", "answer": a}, "prompt_only") for a in ("1", "2")]
    assert group_references(rows) == rows
    assert group_references(kto) == kto
    assert group_references(only) == only


def preference_rows(n_prompts: int) -> list[dict[str, Any]]:
    """Three distinct pairs per prompt, one exact duplicate, file order interleaved."""
    rows = [
        pref(f"Question {i}?", f"Good answer {k} to {i}.", f"Bad answer {k} to {i}.")
        for k in range(3)
        for i in range(n_prompts)
    ]
    return [*rows, pref("question 0?", "good answer 0 to 0.", "BAD answer 0 to 0.")]  # the first row, canonically


def test_load_task_data_on_a_preference_file(jsonl):
    rows = preference_rows(20)
    cfg = DataConfig(train=str(jsonl("prefs.jsonl", rows)), val_fraction=0.2, test_fraction=0.1)
    data = load_task_data(cfg, seed=0)
    assert data.shape == "preference"
    (entry,) = data.report["sources"]
    assert entry["format"] == "preference" and entry["dropped"] == {"empty": 0, "duplicate": 1}
    assert entry["kept"] == 60  # every distinct pair survives dedup
    # a prompt's pairs stay on one side, and nothing held out had to be dropped as contaminated
    sides = [{C.prompt_key(e) for e in part} for part in (data.train, data.eval, data.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert [len(s) for s in sides] == [14, 4, 2]
    assert data.report["contamination_dropped"] == {"eval": 0, "test": 0}
    # held-out pairs stay one example per row (not grouped as references)
    assert (len(data.train), len(data.eval), len(data.test)) == (42, 12, 6)
    assert data.report["splits"] == {"train": 42, "eval": 12, "test": 6}
    assert all(e.is_preference and e.references == (e.messages[-1]["content"],) for e in data.eval + data.test)
    assert data.report["preference"] == {"train": {"pairs": 42}, "eval": {"pairs": 12}, "test": {"pairs": 6}}
    assert data.report["classification_like"] is False
    text = summary(data.report)
    assert "preference: train 42 pairs, eval 12 pairs, test 6 pairs" in text
    json.dumps(data.report)  # data_report.json


def test_load_task_data_kto_and_prompt_only(jsonl):
    kto = [{"prompt": f"Q{i}", "completion": f"A{i}{k}", "label": k == 0} for i in range(10) for k in range(2)]
    data = load_task_data(DataConfig(train=str(jsonl("kto.jsonl", kto)), val_fraction=0.2), seed=1)
    assert data.shape == "kto" and (len(data.train), len(data.eval)) == (16, 4)
    assert data.report["preference"]["train"] == {"desirable": 8, "undesirable": 8}
    assert "train 8 desirable / 8 undesirable" in summary(data.report)
    only = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(10)] + [
        {"prompt": "What is 0 + 0?", "answer": "0"}
    ]
    data = load_task_data(DataConfig(train=str(jsonl("gsm.jsonl", only)), val_fraction=0.2), seed=1)
    assert data.shape == "prompt_only" and "preference" not in data.report
    assert data.report["sources"][0]["dropped"] == {"empty": 0, "duplicate": 1}
    assert (len(data.train), len(data.eval)) == (8, 2)
    assert all(e.references == (e.extras["answer"],) and len(e.messages) == 1 for e in data.train + data.eval)


def test_load_task_data_rejects_mixing_preference_and_other_shapes(jsonl):
    prefs = jsonl("prefs.jsonl", preference_rows(5))
    sft = jsonl("sft.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(5)])
    kto = jsonl("kto.jsonl", [{"prompt": "other", "completion": "a", "label": True}])
    cases = [
        (
            DataConfig(train=str(prefs), eval=str(sft)),
            f"{sft}: shape 'prompt_completion' does not match the training data's 'preference'",
        ),
        (
            DataConfig(train=str(sft), eval=str(prefs)),
            f"{prefs}: shape 'preference' does not match the training data's 'prompt_completion'",
        ),
        (
            DataConfig(train=[str(prefs), str(sft)]),
            f"{sft}: shape 'prompt_completion' does not match the first training source's 'preference'",
        ),
    ]
    for cfg, expected in cases:
        with pytest.raises(DataError) as e:
            load_task_data(cfg, seed=0)
        assert str(e.value).startswith(expected) and "cannot be mixed" in str(e.value)
    # pairs and KTO rows are both preference data: the objective decides (to_unpaired)
    assert load_task_data(DataConfig(train=str(prefs), eval=str(kto)), seed=0).eval[0].label is True


def test_split_by_prompt_uses_the_whole_prompt():
    """Two conversations that end with the same user turn are different prompts; one prompt's rows stay together."""
    a = Example(
        messages=(user("Hi"), assistant("Hello"), user("Why?"), assistant("good")), references=("good",), rejected="bad"
    )
    b = Example(
        messages=(user("Yo"), assistant("Hey"), user("Why?"), assistant("good")), references=("good",), rejected="bad"
    )
    assert C.prompt_key(a) != C.prompt_key(b)
    rows = [pair(f"P{i}", f"c{k}", f"r{k}") for i in range(30) for k in range(3)]
    held, rest = split(rows, (0.3,), seed=5)
    assert len(held) == 27 and not {C.prompt_key(e) for e in held} & {C.prompt_key(e) for e in rest}


def test_preference_formats_can_be_named_in_the_config():
    for name in ("preference", "hh_rlhf", "kto", "prompt_only"):
        assert DataConfig(train="x.jsonl", format=name).format == name


def test_file_line_in_a_wrongly_shaped_file_mentions_the_new_shapes(jsonl):
    message = error_of(jsonl("rows.jsonl", [{"query": "q", "pos": "a", "neg": "b"}]))
    assert re.search(r"rows.jsonl:1: cannot tell the data shape .*prompt\+completion\+label \| prompt ", message)


@pytest.mark.parametrize(
    ("shape", "fits"),
    [
        ("text", {"sft"}),
        ("prompt_completion", {"sft", "grpo"}),
        ("preference", {"sft", "dpo", "orpo", "simpo", "reward", "kto", "grpo"}),
        ("hh_rlhf", {"sft", "dpo", "orpo", "simpo", "reward", "kto", "grpo"}),
        ("kto", {"kto", "grpo"}),
        ("prompt_only", {"grpo"}),
    ],
)
def test_data_problem(shape, fits):
    for objective in ("sft", "dpo", "orpo", "simpo", "reward", "kto", "grpo"):
        problem = data_problem(shape, objective)
        assert (problem is None) == (objective in fits), (shape, objective, problem)
        assert problem is None or ("\n" not in problem and objective in problem)
    assert "data.columns" in data_problem("prompt_only", "sft")
