"""The data layer after reading: cleaning, splits, mixtures, sources and shapes, the data report, the token cache.

Every test writes its own small data and checks exact counts and exact rows.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import write_jsonl

from lmtune.config import DataConfig, DataSource, validate_config
from lmtune.data import clean as C
from lmtune.data.cache import cache_dir, tokenize_cached
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import Example, read_examples, to_example
from lmtune.data.prepare import load_task_data, summary, tokenize_task_data
from lmtune.data.split import mix, split
from lmtune.errors import DataError


def pc(prompt: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "completion": answer, **extra}


def ua(prompt: str, answer: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})


def ex(prompt: str, answer: str, task: str = "") -> Example:
    return Example(messages=ua(prompt, answer), references=(answer,), task=task)


def pairs(examples: list[Example]) -> list[tuple[str, str]]:
    return [(e.prompt, e.messages[-1]["content"]) for e in examples]


def keys(examples: list[Example]) -> set[str]:
    return {C.row_key(e) for e in examples}


def dc(train: Any, **kw: Any) -> DataConfig:
    return DataConfig(train=train, **kw)


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("caf" + "e\u0301", "caf\u00e9"),  # NFD -> NFC
        ("line one\r\nline two\rline three", "line one\nline two\nline three"),
        ("zero\u200bwidth\u200c and\u200d joiner\u2060 bom\ufeff", "zerowidth and joiner bom"),
        ("bell\x07 and escape\x1b gone, tab\tand newline\nkept", "bell and escape gone, tab\tand newline\nkept"),
        ("  \n\t padded both ends \t\n ", "padded both ends"),
    ],
    ids=["nfc", "crlf", "zero-width", "controls", "strip"],
)
def test_normalize_text(raw, clean):
    assert C.normalize_text(raw) == clean


def test_normalize_example_touches_every_turn_and_reference():
    e = Example(
        messages=(
            {"role": "system", "content": " Be brief.\r\n"},
            {"role": "user", "content": "Caf" + "e\u0301?"},
            {"role": "assistant", "content": "Yes\u200b.  "},
        ),
        references=("Yes\u200b.  ", " Oui\r\n"),
        task="t",
        source="f.jsonl:3",
    )
    n = C.normalize_example(e)
    assert n.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Caf\u00e9?"},
        {"role": "assistant", "content": "Yes."},
    )
    assert n.references == ("Yes.", "Oui")
    assert (n.task, n.source) == ("t", "f.jsonl:3")
    assert C.normalize_example(Example(text=" doc\r\n\u200b")).text == "doc"


def test_cleaning_normalises_rows_read_from_a_file(jsonl):
    rows = [
        pc("Caf" + "e\u0301 ?", "Oui\r\nvraiment  "),
        pc(" \ufeffzero\u200bwidth", "\u200bfine\u200b"),
    ]
    data = load_task_data(dc(str(jsonl("t.jsonl", rows)), eval=str(jsonl("e.jsonl", [pc("other", "x")]))), seed=0)
    assert pairs(data.train) == [("Caf\u00e9 ?", "Oui\nvraiment"), ("zerowidth", "fine")]
    assert [e.references for e in data.train] == [("Oui\nvraiment",), ("fine",)]

    off = load_task_data(
        dc(str(jsonl("t.jsonl", rows)), eval=str(jsonl("e.jsonl", [pc("other", "x")])), normalize=False), seed=0
    )
    assert pairs(off.train) == [
        ("Caf" + "e\u0301 ?", "Oui\r\nvraiment  "),
        (" \ufeffzero\u200bwidth", "\u200bfine\u200b"),
    ]


# --------------------------------------------------------------------------- empty answers


def test_empty_answers_are_dropped_and_counted(jsonl):
    rows = [
        pc("q1", "a1"),
        pc("q2", ""),
        pc("q3", "   \n"),
        pc("q4", "\u200b"),  # only invisible characters: empty once normalised
        pc("q5", ["ref a", "ref b"]),
    ]
    path = jsonl("t.jsonl", rows)
    examples = read_examples(path).examples
    kept, dropped = C.clean(examples, normalize=True, dedup=True, near_dedup=False, threshold=0.85)
    assert pairs(kept) == [("q1", "a1"), ("q5", "ref a")]
    assert dropped == {"empty": 3, "duplicate": 0}
    # without normalisation a zero-width space is not whitespace: that row stays
    kept, dropped = C.clean(examples, normalize=False, dedup=True, near_dedup=False, threshold=0.85)
    assert pairs(kept) == [("q1", "a1"), ("q4", "\u200b"), ("q5", "ref a")]
    assert dropped["empty"] == 2

    data = load_task_data(dc(str(path), eval=str(jsonl("e.jsonl", [pc("other", "x")]))), seed=0)
    (entry, _) = data.report["sources"]
    assert entry["rows_read"] == 5 and entry["kept"] == 2
    assert entry["dropped"] == {"empty": 3, "duplicate": 0}


def test_is_empty():
    assert C.is_empty(ex("q", ""))
    assert C.is_empty(ex("q", " \t\n"))
    assert not C.is_empty(ex("q", "a"))
    assert C.is_empty(Example(text="  "))
    assert not C.is_empty(Example(text="doc"))
    # an Example built in code with no prompt is empty too (files reject it when read)
    assert C.is_empty(ex("", "a"))


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicates_ignore_case_and_spacing_first_kept():
    rows = [
        ex("What is  the capital of France?", "Paris."),
        ex("Add 1 and 1.", "2"),
        ex("what is the capital\nof france?", "PARIS."),  # same after case / spacing
        ex("What is the capital of France?", "Paris, of course."),  # another answer: kept
        ex("WHAT IS THE CAPITAL OF FRANCE?", "  paris. "),
        ex("Add 1 and 1.", "2"),
    ]
    kept, n = C.drop_duplicates(rows)
    assert kept == [rows[0], rows[1], rows[3]]
    assert n == 3
    assert C.row_key(rows[0]) == C.row_key(rows[2]) != C.row_key(rows[3])
    # the prompt key ignores the answer, and a system turn is part of the prompt
    assert C.prompt_key(rows[0]) == C.prompt_key(rows[3])
    with_system = Example(messages=({"role": "system", "content": "S"}, *ua("Add 1 and 1.", "2")))
    assert C.row_key(with_system) != C.row_key(rows[1])


def test_dedup_in_load_task_data_counts_and_can_be_turned_off(jsonl):
    rows = [pc("Hello  World", "Yes"), pc("hello world", "YES "), pc("Other", "No"), pc("HELLO WORLD", "yes")]
    held_out = jsonl("e.jsonl", [pc("unrelated", "x")])
    path = jsonl("t.jsonl", rows)
    data = load_task_data(dc(str(path), eval=str(held_out)), seed=0)
    assert pairs(data.train) == [("Hello  World", "Yes"), ("Other", "No")]
    assert data.report["sources"][0]["dropped"] == {"empty": 0, "duplicate": 2}
    data = load_task_data(dc(str(path), eval=str(held_out), dedup=False), seed=0)
    assert len(data.train) == 4
    assert data.report["sources"][0]["dropped"] == {"empty": 0}


def test_text_rows_deduplicate_on_their_text():
    docs = [Example(text="A  Document."), Example(text="a document."), Example(text="another")]
    kept, n = C.drop_duplicates(docs)
    assert kept == [docs[0], docs[2]] and n == 1


LONG = (
    "The committee met on a grey morning in early spring to review the annual budget of the small "
    "coastal town, and after a long discussion about the harbour repairs, the new school roof, the "
    "library opening hours and the winter road gritting schedule, the members agreed that the "
    "remaining funds should be set aside for emergency flood defences along the northern shore, "
    "where the sea wall had been damaged twice in the previous three years by storms that arrived "
    "with very little warning from the regional weather service, which had itself been struggling "
    "with outdated equipment and a shortage of trained staff for most of the decade"
)


def test_near_duplicates_dropped_only_with_near_dedup_on(jsonl):
    words = LONG.split()
    assert len(words) > 100
    one_word_changed = " ".join([*words[:50], "bright", *words[51:]])
    assert words[50] != "bright"
    rows = [
        pc(LONG, "Noted."),
        pc("Summarise the weather for Oslo on Monday.", "Sunny, 20C."),
        pc(one_word_changed, "Noted."),
        pc("Add 1 and 1.", "1 plus 1 is 2."),
    ]
    examples = read_examples(jsonl("t.jsonl", rows)).examples
    kept, n = C.drop_near_duplicates(examples, threshold=0.85)
    assert kept == [examples[0], examples[1], examples[3]] and n == 1

    kept, dropped = C.clean(examples, normalize=True, dedup=True, near_dedup=True, threshold=0.85)
    assert pairs(kept) == [pairs(examples)[i] for i in (0, 1, 3)]
    assert dropped == {"empty": 0, "duplicate": 0, "near_duplicate": 1}
    kept, dropped = C.clean(examples, normalize=True, dedup=True, near_dedup=False, threshold=0.85)
    assert len(kept) == 4 and "near_duplicate" not in dropped

    held_out = str(jsonl("e.jsonl", [pc("unrelated", "x")]))
    on = load_task_data(dc(str(jsonl("t.jsonl", rows)), eval=held_out, near_dedup=True), seed=0)
    assert pairs(on.train) == [pairs(examples)[i] for i in (0, 1, 3)]
    assert on.report["sources"][0]["dropped"] == {"empty": 0, "duplicate": 0, "near_duplicate": 1}
    off = load_task_data(dc(str(jsonl("t.jsonl", rows)), eval=held_out), seed=0)
    assert len(off.train) == 4


def test_short_rows_that_merely_look_alike_are_not_near_duplicates():
    rows = [ex(f"Add {a} and {b}.", f"{a} plus {b} is {a + b}.") for a in range(5) for b in range(5)]
    kept, n = C.drop_near_duplicates(rows, threshold=0.85)
    assert n == 0 and kept == rows


# --------------------------------------------------------------------------- contamination


def test_contaminated_eval_rows_are_dropped_and_counted(jsonl):
    train = jsonl("t.jsonl", [pc("Add 1 and 1.", "2"), pc("Add 2 and 2.", "4"), pc("Add 3 and 3.", "6")])
    held_out = jsonl(
        "e.jsonl",
        [
            pc("Add 2 and 2.", "four"),  # same prompt, other answer: still contaminated
            pc("Add 5 and 5.", "10"),
            pc("ADD 3  AND 3.", "6"),  # same prompt after case / spacing
            pc("Add 6 and 6.", "12"),
        ],
    )
    data = load_task_data(dc(str(train), eval=str(held_out)), seed=0)
    assert pairs(data.eval) == [("Add 5 and 5.", "10"), ("Add 6 and 6.", "12")]
    assert data.report["contamination_dropped"] == {"eval": 2, "test": 0}
    assert data.report["splits"] == {"train": 3, "eval": 2, "test": 0}
    # the eval source's own entry counts cleaning only; contamination is counted apart
    assert data.report["sources"][1]["kept"] == 4

    kept = load_task_data(dc(str(train), eval=str(held_out), decontaminate=False), seed=0)
    assert len(kept.eval) == 4
    assert kept.report["contamination_dropped"] == {"eval": 0, "test": 0}

    held, n = C.drop_contaminated(data.train + [ex("new", "x")], data.train)
    assert pairs(held) == [("new", "x")] and n == 3


def test_contamination_between_split_parts_is_counted(jsonl):
    # split row by row, every prompt twice with two answers: whenever the two land in different parts,
    # the held-out one goes
    rows = [pc(f"Question {i}?", f"Answer {i}{v}.") for i in range(30) for v in "ab"]
    cfg = dc(str(jsonl("t.jsonl", rows)), val_fraction=0.2, test_fraction=0.2, split_by="row")
    data = load_task_data(cfg, seed=1)
    val, test, rest = split(read_examples(cfg.train).examples, (0.2, 0.2), seed=1, by_prompt=False)
    train_prompts = {e.prompt for e in rest}
    expected_eval = [e for e in val if e.prompt not in train_prompts]
    expected_test = [e for e in test if e.prompt not in train_prompts]
    assert data.report["contamination_dropped"] == {
        "eval": len(val) - len(expected_eval),
        "test": len(test) - len(expected_test),
    }
    assert sum(data.report["contamination_dropped"].values()) > 0
    assert pairs(data.eval) == pairs(expected_eval) and pairs(data.test) == pairs(expected_test)
    assert not {e.prompt for e in data.eval + data.test} & {e.prompt for e in data.train}


def multi_reference_rows(n_prompts: int, seed: int = 0) -> list[dict[str, Any]]:
    """Like E2E: each input has 1 to 9 human answers, and the file is in no particular order."""
    rng = random.Random(seed)
    rows = [pc(f"name[Place {i}], food[Dish {i % 7}]", f"Place {i} serves dish {i % 7}, take {k}.")
            for i in range(n_prompts) for k in range(rng.randint(1, 9))]  # fmt: skip
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_keeps_every_prompt_on_one_side(jsonl, seed):
    rows = multi_reference_rows(60, seed)
    cfg = dc(str(jsonl("t.jsonl", rows)), val_fraction=0.1, test_fraction=0.1)
    data = load_task_data(cfg, seed=seed)
    train_prompts = {C.prompt_key(e) for e in data.train}
    held = {C.prompt_key(e) for e in data.eval} | {C.prompt_key(e) for e in data.test}
    assert not train_prompts & held
    assert data.report["contamination_dropped"] == {"eval": 0, "test": 0}  # nothing held out only to be dropped
    groups = data.report["groups"]
    assert groups["eval"]["prompts"] == groups["test"]["prompts"] == 6  # the fractions count prompts
    assert groups["train"]["prompts"] == 48 == len(train_prompts)
    assert sum(g["rows"] for g in groups.values()) == len(rows)  # every row is on exactly one side
    assert len(data.train) == groups["train"]["rows"]  # training keeps every answer as its own example


def test_held_out_rows_sharing_a_prompt_become_one_example_with_all_answers(jsonl):
    rows = multi_reference_rows(40)
    answers: dict[str, list[str]] = {}
    for r in rows:
        answers.setdefault(r["prompt"], []).append(r["completion"])
    data = load_task_data(dc(str(jsonl("t.jsonl", rows)), val_fraction=0.25), seed=3)
    assert len(data.eval) == data.report["groups"]["eval"]["prompts"] == data.report["splits"]["eval"] == 10
    for e in data.eval:
        assert list(e.references) == answers[e.prompt]  # every answer, in file order
        assert e.messages[-1]["content"] == answers[e.prompt][0]
    assert data.report["groups"]["eval"]["rows"] == sum(len(answers[e.prompt]) for e in data.eval)
    assert "eval" in summary(data.report) and "prompts" in summary(data.report)


def test_a_held_out_file_with_a_row_per_reference_is_grouped_too(jsonl):
    held = [pc("Q1", "a"), pc("Q2", "b"), pc("q1 ", "c"), pc("Q1", "a")]  # "q1 " is Q1 once normalised
    train = [pc(f"Train {i}", f"answer {i}") for i in range(20)]
    data = load_task_data(dc(str(jsonl("t.jsonl", train)), eval=str(jsonl("e.jsonl", held))), seed=0)
    assert [(e.prompt, e.references) for e in data.eval] == [("Q1", ("a", "c")), ("Q2", ("b",))]


def test_split_by_row_restores_row_wise_splitting(jsonl):
    rows = multi_reference_rows(60)
    data = load_task_data(dc(str(jsonl("t.jsonl", rows)), val_fraction=0.2, split_by="row"), seed=0)
    assert data.report["groups"]["eval"]["rows"] == len(data.eval)  # no grouping
    assert all(len(e.references) == 1 for e in data.eval)
    assert data.report["contamination_dropped"]["eval"] > 0  # rows of trained prompts were held out


def test_too_few_prompts_to_hold_out_names_the_fix(jsonl):
    rows = [pc("Write a poem.", f"Poem number {i}.") for i in range(50)]
    with pytest.raises(DataError, match=r"no held-out rows: .* of 1 distinct prompt.*data.split_by: row"):
        load_task_data(dc(str(jsonl("t.jsonl", rows))), seed=0)


def test_each_held_out_answer_gets_a_row_and_counts_in_perplexity(tokenizer):
    from lmtune.data.held_out import encode_held_out

    grouped = Example(messages=ua("Q", "first"), references=("first", "second answer"))
    single = ex("P", "only")
    rows, owner, _ = encode_held_out(Encoder(tokenizer, max_length=64), [grouped, single])
    assert owner == [0, 0, 1]
    expected = [Encoder(tokenizer, max_length=64).encode(v) for v in (*grouped.each_reference(), single)]
    assert [list(r["input_ids"]) for r in rows] == [e["input_ids"] for e in expected]


# --------------------------------------------------------------------------- overlong


def lengths_by_hand(tokenizer: Any, examples: list[Example]) -> list[int]:
    """Token counts straight from the chat template (what the chat layout encodes)."""
    rendered = [tokenizer.apply_chat_template(list(e.messages), tokenize=False) for e in examples]
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]


def prompt_lengths_by_hand(tokenizer: Any, examples: list[Example]) -> list[int]:
    """Tokens before the final answer: the template rendered up to and with the assistant header."""
    rendered = [tokenizer.apply_chat_template(list(e.messages[:-1]), tokenize=False, add_generation_prompt=True)
                for e in examples]  # fmt: skip
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]


@pytest.fixture
def overlong_data(jsonl) -> tuple[DataConfig, list[dict[str, Any]]]:
    train = [pc(f"Question number {i}.", " ".join(["word"] * (3 * i + 1))) for i in range(6)]
    held_out = [pc("Held out short.", "ok"), pc("Held out long: " + " ".join(["word"] * 40), "ok")]
    return dc(str(jsonl("t.jsonl", train)), eval=str(jsonl("e.jsonl", held_out))), train


def test_overlong_drop_and_truncate_with_exact_counts(tokenizer, overlong_data):
    cfg, _ = overlong_data
    base = load_task_data(cfg, seed=0)
    train_len = lengths_by_hand(tokenizer, base.train)
    eval_len = lengths_by_hand(tokenizer, base.eval)
    assert train_len == sorted(train_len) and len(set(train_len)) == 6
    limit = train_len[3]  # rows 4 and 5 are longer
    over = [n - limit for n in train_len if n > limit]
    eval_over = [n - limit for n in eval_len if n > limit]
    assert len(over) == 2 and len(eval_over) == 1

    # the held-out long row is kept under either policy, the middle of its prompt cut
    held_out_cut = {"dropped": 0, "cut": 1, "tokens_cut": eval_over[0], "max_tokens_cut": eval_over[0]}

    data = load_task_data(cfg, seed=0)
    tok = tokenize_task_data(Encoder(tokenizer, max_length=limit), data, "drop")
    assert [len(r["input_ids"]) for r in tok.train] == train_len[:4]
    assert tok.eval_examples == data.eval
    assert [len(r["input_ids"]) for r in tok.eval] == [eval_len[0], limit]
    assert data.report["overlong"] == {
        "policy": "drop",
        "max_length": limit,
        "train": {"dropped": 2, "truncated": 0, "tokens_cut": 0},
        "eval": held_out_cut,
    }
    assert (
        f"train: 2 row(s) dropped and 0 truncated at data.max_length={limit} (data.overlong: drop)"
        in (data.report["warnings"])
    )

    data = load_task_data(cfg, seed=0)
    tok = tokenize_task_data(Encoder(tokenizer, max_length=limit), data, "truncate")
    assert [len(r["input_ids"]) for r in tok.train] == [*train_len[:4], limit, limit]
    assert tok.eval_examples == data.eval
    assert data.report["overlong"]["train"] == {"dropped": 0, "truncated": 2, "tokens_cut": sum(over)}
    assert data.report["overlong"]["eval"] == held_out_cut
    answer = eval_len[1] - prompt_lengths_by_hand(tokenizer, data.eval)[1]
    whole = Encoder(tokenizer, max_length=10_000).encode(data.eval[1])
    assert tok.eval[1]["labels"].tolist()[-answer:] == whole["input_ids"][-answer:]  # the answer, whole
    full = Encoder(tokenizer, max_length=10_000).encode(data.train[5])
    assert tok.train[5]["input_ids"].tolist() == full["input_ids"][:limit]
    assert tok.train[5]["labels"].tolist() == full["labels"][:limit]


def test_held_out_answer_too_long_for_max_length_is_a_one_line_error(tokenizer, jsonl):
    train = jsonl("t.jsonl", [pc("Hi", "Hello.")])
    held_out = jsonl("e.jsonl", [pc("Held out long.", " ".join(["word"] * 40))])
    cfg = dc(str(train), eval=str(held_out))
    data = load_task_data(cfg, seed=0)
    limit = lengths_by_hand(tokenizer, data.train)[0]
    answer = lengths_by_hand(tokenizer, data.eval)[0] - prompt_lengths_by_hand(tokenizer, data.eval)[0]
    assert limit - answer < 16  # not even 16 prompt tokens would fit next to the answer
    message = (
        f"{held_out}:1: held-out answer is {answer} tokens; data.max_length={limit} cannot hold it with its "
        f"prompt; raise data.max_length to at least {answer + 16}"
    )
    for policy in ("drop", "truncate"):
        with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
            tokenize_task_data(Encoder(tokenizer, max_length=limit), load_task_data(cfg, seed=0), policy)
    # and at the length the message asks for, the example is kept: its answer and 16 prompt tokens
    tok = tokenize_task_data(Encoder(tokenizer, max_length=answer + 16), data, "drop")
    assert tok.eval_examples == data.eval and len(tok.eval[0]["input_ids"]) == answer + 16


# --------------------------------------------------------------------------- splits


def numbered(n: int) -> list[Example]:
    return [ex(f"Question {i}: what is {i} squared?", f"{i * i}") for i in range(n)]


def test_split_sizes_disjoint_and_complete():
    rows = numbered(100)
    val, test, rest = split(rows, (0.1, 0.2), seed=0)
    assert (len(val), len(test), len(rest)) == (10, 20, 70)
    assert not keys(val) & keys(test) and not keys(val) & keys(rest) and not keys(test) & keys(rest)
    assert keys(val) | keys(test) | keys(rest) == keys(rows)
    for part in (val, test, rest):  # each part keeps the input order
        assert [rows.index(e) for e in part] == sorted(rows.index(e) for e in part)
    (whole,) = split(rows, (), seed=0)
    assert whole == rows
    val, rest = split(rows, (0.0,), seed=0)
    assert val == [] and rest == rows


def test_split_is_stable_whatever_the_row_order():
    rows = numbered(60)
    parts = split(rows, (0.15, 0.1), seed=7)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != rows
    again = split(shuffled, (0.15, 0.1), seed=7)
    assert [keys(p) for p in again] == [keys(p) for p in parts]
    assert [len(p) for p in parts] == [9, 6, 45]
    # the same rows come out in the order they went in
    assert again[0] == [e for e in shuffled if C.row_key(e) in keys(parts[0])]


def test_split_depends_on_the_seed():
    rows = numbered(50)
    vals = [keys(split(rows, (0.2,), seed=s)[0]) for s in range(4)]
    assert all(len(v) == 10 for v in vals)
    assert len({frozenset(v) for v in vals}) == 4


def classes(n_per_class: int = 20) -> list[Example]:
    rows = []
    for i in range(n_per_class):
        rows += [
            ex(f"Review {i}: loved it, great film", "positive"),
            ex(f"Review {i}: awful, a waste of time", "negative"),
            ex(f"Review {i}: it was fine I suppose", "neutral"),
        ]
    return rows


def test_stratified_split_keeps_every_class_share():
    rows = classes()
    for seed in range(5):
        val, rest = split(rows, (0.25,), seed=seed, stratify=True)
        assert Counter(e.messages[-1]["content"] for e in val) == {"positive": 5, "negative": 5, "neutral": 5}
        assert Counter(e.messages[-1]["content"] for e in rest) == {"positive": 15, "negative": 15, "neutral": 15}
    # without stratification some seed gives an uneven split (which is what stratifying prevents)
    uneven = [
        Counter(e.messages[-1]["content"] for e in split(rows, (0.25,), seed=s)[0])
        != Counter({"positive": 5, "negative": 5, "neutral": 5})
        for s in range(5)
    ]
    assert any(uneven)
    # stratified labels are canonical answers: case and spacing do not make a new class
    mixed = [ex(e.prompt, e.messages[-1]["content"].upper()) if i % 2 else e for i, e in enumerate(rows)]
    val, _ = split(mixed, (0.25,), seed=0, stratify=True)
    assert Counter(e.messages[-1]["content"].lower() for e in val) == {"positive": 5, "negative": 5, "neutral": 5}


def test_stratify_auto_only_for_classification_like_data(jsonl):
    cls_rows = [pc(e.prompt, e.messages[-1]["content"]) for e in classes()]
    gen_rows = [pc(e.prompt, e.messages[-1]["content"]) for e in numbered(60)]
    cls_path, gen_path = str(jsonl("cls.jsonl", cls_rows)), str(jsonl("gen.jsonl", gen_rows))
    assert C.is_classification_like(classes()) and not C.is_classification_like(numbered(60))

    data = load_task_data(dc(cls_path, val_fraction=0.25), seed=3)
    assert data.report["sources"][0]["stratified"] is True
    assert Counter(e.messages[-1]["content"] for e in data.eval) == {"positive": 5, "negative": 5, "neutral": 5}
    assert data.report["classification_like"] is True
    assert data.report["class_balance"] == {"positive": 15, "negative": 15, "neutral": 15}

    data = load_task_data(dc(gen_path, val_fraction=0.25), seed=3)
    assert data.report["sources"][0]["stratified"] is False
    assert data.report["classification_like"] is False and "class_balance" not in data.report
    assert len(data.eval) == 15

    assert (
        load_task_data(dc(cls_path, val_fraction=0.25, stratify="no"), seed=3).report["sources"][0]["stratified"]
        is False
    )
    # forced on free text every answer is a class of one row, and 25% of one row rounds to none
    with pytest.raises(DataError, match="no held-out rows"):
        load_task_data(dc(gen_path, val_fraction=0.25, stratify="yes"), seed=3)
    val, rest = split(numbered(60), (0.25,), seed=3, stratify=True)
    assert (len(val), len(rest)) == (0, 60)


@pytest.mark.parametrize(
    ("n", "answers", "expected"),
    [
        (60, 3, True),
        (9, 3, False),  # fewer than 10 rows
        (100, 21, False),  # more than 20 distinct answers
        (40, 10, False),  # fewer than 5 rows per answer on average
        (50, 10, True),
    ],
)
def test_is_classification_like(n, answers, expected):
    rows = [ex(f"q{i}", f"label {i % answers}") for i in range(n)]
    assert C.is_classification_like(rows) is expected


def test_test_fraction_is_split_off_and_never_trained_on(jsonl):
    rows = [pc(f"Question {i}?", f"Answer {i}.") for i in range(40)]
    path = jsonl("t.jsonl", rows)
    data = load_task_data(dc(str(path), val_fraction=0.1, test_fraction=0.25), seed=2)
    assert data.report["splits"] == {"train": 26, "eval": 4, "test": 10}
    entry = data.report["sources"][0]
    assert (entry["train"], entry["validation"], entry["test"]) == (26, 4, 10)
    assert keys(data.train) | keys(data.eval) | keys(data.test) == keys(read_examples(path).examples)
    assert not keys(data.test) & keys(data.train) and not keys(data.test) & keys(data.eval)


# --------------------------------------------------------------------------- mixtures


def task_rows(task: str, n: int) -> list[Example]:
    return [ex(f"{task} question {i}", f"{task} answer {i}", task=task) for i in range(n)]


def test_mix_weights_three_to_one():
    a, b = task_rows("a", 40), task_rows("b", 40)
    mixed = mix([a, b], [3, 1], seed=0)
    assert Counter(e.task for e in mixed) == {"a": 60, "b": 20}
    counts_a = Counter(C.row_key(e) for e in mixed if e.task == "a")
    assert sorted(Counter(counts_a.values()).items()) == [(1, 20), (2, 20)]  # every row once or twice
    counts_b = Counter(C.row_key(e) for e in mixed if e.task == "b")
    assert set(counts_b.values()) == {1} and len(counts_b) == 20  # a subset, no repeats
    assert set(counts_b) <= keys(b)


def test_mix_upsamples_a_small_source_evenly():
    small, large = task_rows("small", 10), task_rows("large", 30)
    mixed = mix([small, large], [1, 1], seed=0)
    assert Counter(e.task for e in mixed) == {"small": 20, "large": 20}
    assert Counter(C.row_key(e) for e in mixed if e.task == "small") == dict.fromkeys(keys(small), 2)
    # 7 rows asked of a 3-row source: 3 + 3 + 1
    mixed = mix([task_rows("s", 3), task_rows("l", 11)], [1, 1], seed=0)
    assert sorted(Counter(C.row_key(e) for e in mixed if e.task == "s").values()) == [2, 2, 3]


@pytest.mark.parametrize(
    ("sizes", "weights", "expected"),
    [
        ((10, 10, 11), (1, 1, 1), (11, 10, 10)),
        ((20, 25), (1, 1), (23, 22)),
        ((7, 7, 7), (1, 2, 4), (3, 6, 12)),
        ((5, 50), (2, None), (37, 18)),  # no weight in a weighted mixture counts as 1
    ],
)
def test_mix_keeps_the_total_row_count(sizes, weights, expected):
    sources = [task_rows(f"t{i}", n) for i, n in enumerate(sizes)]
    mixed = mix(sources, list(weights), seed=0)
    assert len(mixed) == sum(sizes)
    assert tuple(Counter(e.task for e in mixed)[f"t{i}"] for i in range(len(sizes))) == expected


def test_mix_without_weights_uses_every_row_once():
    a, b = task_rows("a", 5), task_rows("b", 12)
    assert mix([a, b], [None, None], seed=0) == a + b


def test_mix_is_seeded_and_order_independent():
    a, b = task_rows("a", 40), task_rows("b", 40)
    chosen = keys([e for e in mix([a, b], [3, 1], seed=0) if e.task == "b"])
    assert keys([e for e in mix([a, b[::-1]], [3, 1], seed=0) if e.task == "b"]) == chosen
    assert keys([e for e in mix([a, b], [3, 1], seed=1) if e.task == "b"]) != chosen


def test_mix_skips_a_source_with_no_rows_left():
    a = task_rows("a", 10)
    assert Counter(e.task for e in mix([a, []], [1, 3], seed=0)) == {"a": 10}


def test_mixture_in_load_task_data(jsonl):
    a = jsonl("a.jsonl", [pc(f"alpha {i}", f"A{i}") for i in range(40)])
    b = jsonl("b.jsonl", [pc(f"beta {i}", f"B{i}") for i in range(40)])
    held_out = jsonl("held.jsonl", [pc("alpha 99", "A99"), pc("beta 99", "B99", task="b")])
    cfg = dc(
        [{"path": str(a), "task": "a", "weight": 3}, {"path": str(b), "task": "b", "weight": 1}], eval=str(held_out)
    )
    data = load_task_data(cfg, seed=0)
    assert data.report["tasks"] == {"a": 60, "b": 20}
    assert data.report["mixture"] == {"a": 3, "b": 1}
    assert data.report["splits"] == {"train": 80, "eval": 2, "test": 0}
    assert [(s["task"], s["rows_read"], s["kept"], s["train"]) for s in data.report["sources"][:2]] == [
        ("a", 40, 40, 40),
        ("b", 40, 40, 40),
    ]
    # several training tasks: held-out rows keep their own task (field), else the eval file's name
    assert [e.task for e in data.eval] == ["held", "b"]

    no_weights = load_task_data(dc([str(a), str(b)], eval=str(held_out)), seed=0)
    assert no_weights.report["tasks"] == {"a": 40, "b": 40}  # tasks default to the file names
    assert Counter(C.row_key(e) for e in no_weights.train).most_common(1)[0][1] == 1


def test_mixture_without_eval_splits_every_source(jsonl):
    a = jsonl("a.jsonl", [pc(f"alpha {i}", f"A{i}") for i in range(20)])
    b = jsonl("b.jsonl", [pc(f"beta {i}", f"B{i}") for i in range(40)])
    cfg = dc([{"path": str(a), "weight": 1}, {"path": str(b), "weight": 1}], val_fraction=0.25)
    data = load_task_data(cfg, seed=0)
    assert Counter(e.task for e in data.eval) == {"a": 5, "b": 10}
    assert data.report["tasks"] == {"a": 23, "b": 22}  # 45 rows shared 1:1: the spare row goes to the first
    assert [(s["train"], s["validation"]) for s in data.report["sources"]] == [(15, 5), (30, 10)]
    assert data.eval_source == f"25% of {a}, {b} (seed 0)"


def test_one_eval_file_for_one_task_takes_that_task(jsonl):
    train = jsonl("weather.jsonl", [pc(f"q{i}", f"a{i}") for i in range(5)])
    held_out = jsonl("eval.jsonl", [pc("other", "x")])
    data = load_task_data(dc([{"path": str(train), "task": "forecast"}], eval=str(held_out)), seed=0)
    assert {e.task for e in data.train + data.eval} == {"forecast"}
    data = load_task_data(dc(str(train), eval=str(held_out)), seed=0)
    assert {e.task for e in data.train + data.eval} == {"weather"}


# --------------------------------------------------------------------------- sources and shapes


def test_sources_fill_in_the_sections_defaults():
    cfg = DataConfig(
        train=["a.jsonl", {"path": "b.csv", "task": "b", "weight": 2, "format": "alpaca", "columns": {}}],
        eval="e.jsonl",
        format="prompt_completion",
        columns={"prompt": "question"},
        split="validation",
        subset="main",
    )
    a, b = cfg.sources("train")
    assert a == DataSource(
        path="a.jsonl", format="prompt_completion", columns={"prompt": "question"}, split="validation", subset="main"
    )
    assert (b.task, b.weight, b.format, b.columns) == ("b", 2, "alpaca", {})  # its own columns: none mapped
    assert [s.path for s in cfg.sources("eval")] == ["e.jsonl"]
    assert DataConfig(train="x.jsonl").sources("eval") == []


@pytest.mark.parametrize("shape", ["sharegpt", "cot"])
def test_new_shapes_can_be_named_in_the_config(shape):
    cfg = validate_config({"data": {"train": "x.jsonl", "format": shape}})
    assert cfg.data.format == shape
    cfg = validate_config({"data": {"train": [{"path": "x.jsonl", "format": shape}]}})
    assert cfg.data.sources()[0].format == shape


def test_per_row_task_field(jsonl):
    rows = [pc("q1", "a1", task="math"), pc("q2", "a2"), pc("q3", "a3", task="geo"), pc("q4", "a4", task="")]
    data = read_examples(jsonl("mixed.jsonl", rows))
    assert data.shape == "prompt_completion"
    assert [e.task for e in data.examples] == ["math", "mixed", "geo", "mixed"]
    assert [e.source for e in data.examples] == [f"{data.path}:{i}" for i in (1, 2, 3, 4)]
    assert [e.task for e in read_examples(data.path, task="named").examples] == ["math", "named", "geo", "named"]


def test_columns_mapping(jsonl):
    rows = [{"question": "2+2?", "answer": "4", "id": 7}, {"question": "3+3?", "answer": "6", "id": 8}]
    path = jsonl("qa.jsonl", rows)
    data = read_examples(path, columns={"prompt": "question", "completion": "answer"})
    assert data.shape == "prompt_completion"
    assert [e.messages for e in data.examples] == [ua("2+2?", "4"), ua("3+3?", "6")]
    # unmapped, {question, answer} is no known shape
    with pytest.raises(DataError, match="cannot tell the data shape"):
        read_examples(path)
    # a mapping into another shape, named explicitly
    data = read_examples(path, "input_output", columns={"input": "question", "output": "answer"})
    assert [e.messages for e in data.examples] == [ua("2+2?", "4"), ua("3+3?", "6")]


def test_columns_per_source_and_from_the_section(jsonl):
    first = jsonl("first.jsonl", [{"q": "Capital of France?", "a": "Paris"}])
    second = jsonl("second.jsonl", [{"question": "Capital of Italy?", "answer": "Rome"}])
    third = jsonl("third.jsonl", [{"prompt": "Capital of Spain?", "completion": "Madrid"}])
    held_out = jsonl("held.jsonl", [{"question": "Capital of Peru?", "answer": "Lima"}])
    cfg = dc(
        [
            {"path": str(first), "columns": {"prompt": "q", "completion": "a"}},
            str(second),  # takes data.columns
            {"path": str(third), "columns": {}},  # its own: no mapping
        ],
        eval=str(held_out),
        columns={"prompt": "question", "completion": "answer"},
    )
    data = load_task_data(cfg, seed=0)
    assert pairs(data.train) == [
        ("Capital of France?", "Paris"),
        ("Capital of Italy?", "Rome"),
        ("Capital of Spain?", "Madrid"),
    ]
    assert [e.task for e in data.train] == ["first", "second", "third"]
    assert pairs(data.eval) == [("Capital of Peru?", "Lima")]


def test_sharegpt_shape(jsonl):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "You are terse."},
                {"from": "human", "value": "Capital of France?"},
                {"from": "gpt", "value": "Paris."},
                {"from": "user", "value": "And Italy?"},
                {"from": "assistant", "value": "Rome."},
            ]
        },
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "system": "Be kind."},
    ]
    data = read_examples(jsonl("chat.jsonl", rows))
    assert data.shape == "sharegpt"
    first, second = data.examples
    assert first.messages == (
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."},
    )
    assert first.references == ("Rome.",) and first.prompt == "And Italy?"
    assert second.messages == ({"role": "system", "content": "Be kind."}, *ua("Hi", "Hello!"))


@pytest.mark.parametrize(
    ("conversations", "words"),
    [
        ([], "field 'conversations': expected a non-empty list"),
        ([{"from": "human"}], "field 'conversations[0]': expected {from, value}"),
        ([{"from": "bot", "value": "x"}], "field 'conversations[0].from': unknown speaker 'bot'"),
        ([{"from": "human", "value": "x"}], "the last turn must be the assistant's answer"),
    ],
    ids=["empty", "no-value", "unknown-speaker", "no-answer"],
)
def test_sharegpt_errors(jsonl, conversations, words):
    with pytest.raises(DataError, match=rf"bad\.jsonl:1: .*{re.escape(words)}"):
        read_examples(jsonl("bad.jsonl", [{"conversations": conversations}]), "sharegpt")


def test_cot_shape(jsonl, tokenizer):
    rows = [
        {"question": "3 apples + 4 apples?", "rationale": "  3 + 4 = 7. ", "answer": " 7 "},
        {"question": "Half of 10?", "rationale": "", "answer": "5"},
    ]
    data = read_examples(jsonl("cot.jsonl", rows))
    assert data.shape == "cot"
    first, second = data.examples
    assert first.messages == ua("3 apples + 4 apples?", "3 + 4 = 7.\n\nAnswer: 7")
    assert first.references == ("3 + 4 = 7.\n\nAnswer: 7",)
    assert second.messages[-1]["content"] == "\n\nAnswer: 5"
    assert C.normalize_example(second).messages[-1]["content"] == "Answer: 5"
    # the whole reasoning and the answer line are trained on
    encoder = Encoder(tokenizer)
    enc = encoder.encode(first)
    n = len(encoder.prompt_ids(first))
    assert tokenizer.decode(enc["input_ids"][n:]) == "3 + 4 = 7.\n\nAnswer: 7<|im_end|>\n"
    assert enc["labels"][:n] == [IGNORE] * n and enc["labels"][n:] == enc["input_ids"][n:]


def test_system_field_on_any_row(jsonl, tokenizer):
    rows = [
        pc("Hi", "Hello.", system="Answer in French."),
        {"instruction": "Name a colour.", "output": "Blue.", "system": "Be brief."},
        {
            "messages": [{"role": "system", "content": "Own turn."}, *map(dict, ua("Q", "A"))],
            "system": "Not added twice.",
        },
        {"messages": list(map(dict, ua("Q2", "A2"))), "system": "Added first."},
    ]
    examples = [read_examples(jsonl(f"r{i}.jsonl", [row])).examples[0] for i, row in enumerate(rows)]
    assert [e.messages[0] for e in examples] == [
        {"role": "system", "content": c} for c in ("Answer in French.", "Be brief.", "Own turn.", "Added first.")
    ]
    assert [len(e.messages) for e in examples] == [3, 3, 3, 3]
    assert examples[0].prompt == "Hi"
    # the row's own system message wins over data.system_prompt
    text = tokenizer.decode(Encoder(tokenizer, system_prompt="Global.").encode(examples[0])["input_ids"])
    assert text.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n") and "Global." not in text
    with pytest.raises(DataError, match="field 'system': expected text, found a number"):
        read_examples(jsonl("bad.jsonl", [pc("Hi", "Hello.", system=5)]))


def test_text_rows_ignore_a_system_field():
    assert to_example({"text": "doc", "system": "s"}, "text") == Example(text="doc")


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_file(tmp_path):
    rows = [pc(f"Question {i}?", f"Answer {i}.") for i in range(5)]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    data = read_examples(path)
    assert data.shape == "prompt_completion"
    assert pairs(data.examples) == [(r["prompt"], r["completion"]) for r in rows]
    assert [e.source for e in data.examples] == [f"{path}:{i}" for i in range(1, 6)]
    assert [e.task for e in data.examples] == ["rows"] * 5

    bad = write_parquet(tmp_path / "bad.parquet", [pc("ok", "fine"), {"prompt": "n", "completion": None}])
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: field 'completion': expected text")):
        read_examples(bad)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_examples(tmp_path / "broken.parquet")


def test_folder_of_mixed_files(tmp_path):
    import csv

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [pc("q1", "a1"), pc("q2", "a2")])
    with (folder / "b.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["q3", "a3"])
    write_parquet(folder / "c.parquet", [pc("q4", "a4")])
    (folder / "sub" / "d.json").write_text(json.dumps([pc("q5", "a5", task="deep")]), encoding="utf-8")
    (folder / "notes.txt").write_text("not data\n", encoding="utf-8")
    (folder / "e.JSONL").write_text(json.dumps(pc("q6", "a6")) + "\n", encoding="utf-8")

    data = read_examples(folder)
    assert data.shape == "prompt_completion"
    # files in path order ("e.JSONL" sorts before "sub/"), rows in file order
    assert [e.prompt for e in data.examples] == ["q1", "q2", "q3", "q4", "q6", "q5"]
    assert [e.source for e in data.examples] == [
        f"{folder / 'a.jsonl'}:1",
        f"{folder / 'a.jsonl'}:2",
        f"{folder / 'b.csv'}:2",
        f"{folder / 'c.parquet'}:1",
        f"{folder / 'e.JSONL'}:1",
        f"{folder / 'sub' / 'd.json'}:1",
    ]
    assert [e.task for e in data.examples] == ["corpus"] * 5 + ["deep"]
    loaded = load_task_data(dc(str(folder), val_fraction=0.34), seed=0)
    assert len(loaded.train) + len(loaded.eval) == 6


def test_hub_like_id_offline_fails_fast(monkeypatch, jsonl):
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        read_examples("someone/some-dataset")
    message = str(e.value)
    assert message.startswith("someone/some-dataset: not a local file or folder")
    assert "offline" in message and "\n" not in message
    # HF_HUB_OFFLINE unset: the (patched, see conftest) probe says the hub is unreachable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(DataError, match="offline"):
        load_task_data(dc("someone/some-dataset", split="test", subset="x"), seed=0)
    with pytest.raises(DataError, match="offline"):
        load_task_data(dc(str(jsonl("t.jsonl", [pc("q", "a")])), eval="someone/held-out"), seed=0)
    assert time.perf_counter() - start < 5


def test_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(DataError, match="data.train: missing.jsonl: no such file"):
        load_task_data(dc("missing.jsonl"), seed=0)
    with pytest.raises(DataError, match="data.eval: ./nope: no such file"):
        load_task_data(dc(str(write_jsonl(tmp_path / "t.jsonl", [pc("q", "a")])), eval="./nope"), seed=0)


def test_hub_probe_is_bounded_in_time(monkeypatch, hub_off):
    """The real probe gives up after its timeout even when the connection attempt hangs."""
    import socket

    def hang(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert hub_off(timeout=0.1) is False  # hub_off yields the real lmtune.models.hub_reachable
    assert time.perf_counter() - start < 1.4


# --------------------------------------------------------------------------- data report


def classification_files(jsonl) -> tuple[str, list[dict[str, Any]]]:
    rows = [pc(e.prompt, e.messages[-1]["content"]) for e in classes()]
    rows += [pc("Review 0: loved it, great film", "positive"), pc("Review 99: blank", " ")]  # a duplicate, an empty
    return str(jsonl("reviews.jsonl", rows)), rows


def test_data_report_contents_for_classification(jsonl, tokenizer):
    path, rows = classification_files(jsonl)
    data = load_task_data(dc(path, val_fraction=0.25), seed=0)
    encoder = Encoder(tokenizer, max_length=512)
    tok = tokenize_task_data(encoder, data, "drop")
    r = data.report
    assert r["sources"] == [
        {
            "path": path,
            "role": "train",
            "task": "reviews",
            "format": "prompt_completion",
            "rows_read": 62,
            "dropped": {"empty": 1, "duplicate": 1},
            "kept": 60,
            "train": 45,
            "validation": 15,
            "test": 0,
            "stratified": True,
        }
    ]
    assert r["splits"] == {"train": 45, "eval": 15, "test": 0}
    assert r["contamination_dropped"] == {"eval": 0, "test": 0}
    assert r["tasks"] == {"reviews": 45} and r["mixture"] == {"reviews": None}
    assert r["classification_like"] is True
    assert r["class_balance"] == {"positive": 15, "negative": 15, "neutral": 15}
    assert r["overlong"] == {
        "policy": "drop",
        "max_length": 512,
        "train": {"dropped": 0, "truncated": 0, "tokens_cut": 0},
        "eval": {"dropped": 0, "cut": 0, "tokens_cut": 0, "max_tokens_cut": 0},
    }

    lengths = [len(encoder.encode(e)["input_ids"]) for e in data.train]
    answers = [sum(x != IGNORE for x in encoder.encode(e)["labels"]) for e in data.train]
    assert [len(row["input_ids"]) for row in tok.train] == lengths
    t = r["tokens"]
    assert t["total"] == sum(lengths) and t["trained"] == sum(answers)
    assert t["length"]["min"] == min(lengths) and t["length"]["max"] == max(lengths)
    assert t["length"]["p50"] == statistics.median(lengths)
    assert t["length"]["mean"] == round(statistics.mean(lengths), 1)
    assert t["length"]["p90"] == pytest.approx(float(np.quantile(lengths, 0.9)))
    assert t["length"]["min"] <= t["length"]["p50"] <= t["length"]["p90"] <= t["length"]["p99"] <= t["length"]["max"]
    assert (t["answer_length"]["min"], t["answer_length"]["max"]) == (min(answers), max(answers))
    assert t["answer_length"]["p50"] == statistics.median(answers)
    hist = t["histogram"]
    assert len(hist) == 10 and sum(b["count"] for b in hist) == 45
    assert hist[0]["from"] == min(lengths) and hist[-1]["to"] == max(lengths)

    assert r["warnings"] == [
        "3 class(es) have fewer than 100 examples (e.g. 'positive': 15); classifiers usually need ~100+ per class"
    ]
    text = summary(r)
    assert f"{path} (train, prompt_completion, task reviews): 62 read, 60 kept; dropped: empty 1, duplicate 1" in text
    assert "splits (by prompt): train 45, eval 15, test 0 (one row per prompt)" in text
    assert "classes: 'positive' 15, 'negative' 15, 'neutral' 15" in text
    assert "warning: 3 class(es) have fewer than 100 examples" in text
    assert f"tokens per example: min {min(lengths)}, " in text


def test_data_report_warnings_for_generation_data(jsonl, tokenizer):
    rows = [pc(f"Question {i}?", f"Answer {i}.") for i in range(20)] + [pc(f"Empty {i}", "") for i in range(6)]
    path = str(jsonl("gen.jsonl", rows))
    held_out = str(jsonl("held.jsonl", [pc("Question 3?", "Answer 3."), pc("Question 30?", "Answer 30.")]))
    data = load_task_data(dc(path, eval=held_out), seed=0)
    tokenize_task_data(Encoder(tokenizer), data, "drop")
    assert data.report["classification_like"] is False
    assert data.report["warnings"] == [
        "20 training examples; generation tasks usually want ~1,000 or more",
        "1 eval row(s) had a prompt that is also in the training data and were dropped",
        f"{path}: cleaning dropped 6 of 26 rows ({{'empty': 6, 'duplicate': 0}})",
    ]
    assert [(s["role"], s["task"], s["rows_read"], s["kept"]) for s in data.report["sources"]] == [
        ("train", "gen", 26, 20),
        ("eval", "gen", 2, 2),
    ]
    assert "contamination: 1 eval and 0 test rows dropped" in summary(data.report)


def test_no_training_rows_left_is_an_error(jsonl):
    path = jsonl("t.jsonl", [pc("q1", ""), pc("q2", " ")])
    with pytest.raises(DataError, match="data.train: no training rows left after cleaning"):
        load_task_data(dc(str(path), eval=str(jsonl("e.jsonl", [pc("x", "y")]))), seed=0)


# --------------------------------------------------------------------------- token cache


@pytest.fixture
def cold_cache(monkeypatch, tmp_path) -> Path:
    cache = tmp_path / "lmtune-cache"
    monkeypatch.setenv("LMTUNE_CACHE", str(cache))
    return cache


@pytest.fixture
def cache_files(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "cached-data"
    folder.mkdir()
    train = write_jsonl(folder / "train.jsonl", [pc(f"Question {i}?", f"Answer number {i}.") for i in range(12)])
    held_out = write_jsonl(folder / "eval.jsonl", [pc("Question 50?", "Answer 50."), pc("Question 51?", "Fifty-one.")])
    return train, held_out


def tokenized(tokenizer: Any, cfg: DataConfig, seed: int = 0) -> tuple[Any, bool, Any]:
    data = load_task_data(cfg, seed)
    encoder = Encoder(tokenizer, cfg.template, cfg.system_prompt, cfg.max_length, cfg.train_on_prompt)
    tok, hit = tokenize_cached(encoder, data, cfg, seed)
    return tok, hit, data


def same_rows(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_token_cache_hit_gives_identical_arrays(cold_cache, cache_files, tokenizer):
    train, held_out = cache_files
    cfg = dc(str(train), eval=str(held_out), max_length=64)
    first, hit, data1 = tokenized(tokenizer, cfg)
    assert hit is False
    assert cache_dir() == cold_cache / "datasets"
    assert len(list(cache_dir().glob("*.pkl"))) == 1
    second, hit, data2 = tokenized(tokenizer, cfg)
    assert hit is True
    assert same_rows(second.train, first.train) and same_rows(second.eval, first.eval)
    assert {v.dtype for r in second.train for v in r.values()} == {np.dtype(np.int32)}
    assert second.eval_examples == first.eval_examples == data2.eval
    for key in ("overlong", "tokens", "warnings"):
        assert data2.report[key] == data1.report[key]
    # and the same as tokenising without the cache
    fresh = tokenize_task_data(Encoder(tokenizer, max_length=64), load_task_data(cfg, 0), "drop")
    assert same_rows(fresh.train, first.train)


def test_token_cache_misses_when_anything_changes(cold_cache, cache_files, tokenizer):
    train, held_out = cache_files
    cfg = dc(str(train), eval=str(held_out), max_length=64)
    assert tokenized(tokenizer, cfg)[1] is False
    assert tokenized(tokenizer, cfg)[1] is True

    assert tokenized(tokenizer, cfg, seed=1)[1] is False  # the seed
    assert tokenized(tokenizer, cfg.model_copy(update={"max_length": 63}))[1] is False  # the data section
    assert tokenized(tokenizer, cfg.model_copy(update={"overlong": "truncate"}))[1] is False

    content = train.read_bytes()
    train.write_bytes(content.replace(b"Answer number 11.", b"Answer number 12."))  # one byte of a data file
    assert tokenized(tokenizer, cfg)[1] is False
    assert tokenized(tokenizer, cfg)[1] is True
    held_out.write_bytes(held_out.read_bytes() + b"\n")  # even a blank line: the file's bytes are the key
    assert tokenized(tokenizer, cfg)[1] is False
    assert len(list(cache_dir().glob("*.pkl"))) == 6


def test_token_cache_off_and_damaged_entries(cold_cache, cache_files, tokenizer, plain_tokenizer):
    train, held_out = cache_files
    off = dc(str(train), eval=str(held_out), cache=False)
    assert tokenized(tokenizer, off)[1] is False
    assert tokenized(tokenizer, off)[1] is False
    assert not cache_dir().exists()

    cfg = dc(str(train), eval=str(held_out))
    first, hit, _ = tokenized(tokenizer, cfg)
    assert hit is False
    (entry,) = cache_dir().glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    again, hit, _ = tokenized(tokenizer, cfg)
    assert hit is False and same_rows(again.train, first.train)  # rebuilt
    assert tokenized(tokenizer, cfg)[1] is True
    # another tokenizer (here: no chat template, so another layout) is another entry
    assert tokenized(plain_tokenizer, cfg)[1] is False


def test_hub_sources_are_not_cached(tokenizer):
    from lmtune.data.cache import fingerprint

    assert fingerprint(dc("someone/some-dataset"), 0, Encoder(tokenizer)) is None


def test_a_grouped_test_example_is_written_with_all_its_answers():
    from lmtune.pipeline import example_row

    grouped = Example(messages=ua("Q", "first"), references=("first", "second"), task="t", source="f:1")
    row = example_row(grouped)
    assert row["messages"][-1]["content"] == ["first", "second"]
    assert to_example({"messages": row["messages"]}, "messages").references == ("first", "second")
    assert example_row(ex("P", "only"))["messages"][-1] == {"role": "assistant", "content": "only"}
