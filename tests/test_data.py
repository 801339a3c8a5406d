"""Reading task data: every shape, auto detection, JSONL / JSON / CSV, and file:line errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from lmtune.config import DataConfig
from lmtune.data.clean import clean
from lmtune.data.formats import Example, detect_shape, read_examples, to_example
from lmtune.data.prepare import load_task_data
from lmtune.data.split import split
from lmtune.errors import DataError, LmtuneError


def user_assistant(prompt: str, answer: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("row", "shape", "messages", "references"),
    [
        (
            {"prompt": "Translate to French: cat", "completion": "chat"},
            "prompt_completion",
            user_assistant("Translate to French: cat", "chat"),
            ("chat",),
        ),
        ({"input": "2+2=", "output": "4"}, "input_output", user_assistant("2+2=", "4"), ("4",)),
        (
            {"instruction": "Summarise.", "input": "A long text.", "output": "Short."},
            "alpaca",
            user_assistant("Summarise.\n\nA long text.", "Short."),
            ("Short.",),
        ),
        (
            {"instruction": "Name a colour.", "input": "", "output": "Blue."},
            "alpaca",
            user_assistant("Name a colour.", "Blue."),
            ("Blue.",),
        ),
        (
            {"instruction": "Name a colour.", "output": "Red."},
            "alpaca",
            user_assistant("Name a colour.", "Red."),
            ("Red.",),
        ),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
            "messages",
            user_assistant("Hi", "Hello!"),
            ("Hello!",),
        ),
    ],
    ids=["prompt_completion", "input_output", "alpaca", "alpaca-empty-input", "alpaca-no-input", "messages"],
)
def test_conversation_shapes_are_detected_and_read(jsonl, row, shape, messages, references):
    path = jsonl("rows.jsonl", [row, row])
    data = read_examples(path)
    assert data.shape == shape
    assert len(data.examples) == 2
    ex = data.examples[0]
    assert ex.messages == messages
    assert ex.text is None
    assert ex.references == references
    assert ex.prompt == messages[-2]["content"]
    # naming the shape explicitly gives the same examples
    assert read_examples(path, shape).examples == data.examples


def test_text_shape(jsonl):
    data = read_examples(jsonl("docs.jsonl", [{"text": "First document."}, {"text": "Second one."}]))
    assert data.shape == "text"
    assert [e.text for e in data.examples] == ["First document.", "Second one."]
    assert all(e.messages == () and e.references == () for e in data.examples)


def test_multi_turn_messages_with_system_turn(jsonl):
    turns = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    data = read_examples(jsonl("chat.jsonl", [{"messages": turns}]))
    assert data.shape == "messages"
    (ex,) = data.examples
    assert ex.messages == tuple(turns)
    assert ex.references == ("Rome.",)
    assert ex.prompt == "And of Italy?"  # the last user turn


def test_detection_order_prefers_alpaca_over_input_output():
    row = {"instruction": "Do it.", "input": "x", "output": "y"}
    assert detect_shape(Path("f.jsonl"), 1, row) == "alpaca"
    assert detect_shape(Path("f.jsonl"), 1, {"input": "x", "output": "y"}) == "input_output"


def test_undetectable_shape_names_file_line_and_fields(jsonl):
    path = jsonl("odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert f"{path}:1:" in str(e.value)
    assert "'question'" in str(e.value) and "'answer'" in str(e.value)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert f"{path}:5: field 'text'" in str(e.value)


def test_utf8_bom_on_first_line_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "p", "completion": "c"}).encode() + b"\n")
    assert read_examples(path).examples[0].references == ("c",)


# --------------------------------------------------------------------------- files


def test_json_list_file(tmp_path):
    path = tmp_path / "rows.json"
    rows = [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    data = read_examples(path)
    assert data.shape == "input_output"
    assert [e.messages for e in data.examples] == [user_assistant("a", "b"), user_assistant("c", "d")]


def test_json_file_errors_name_the_item(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"input": "a", "output": "b"}, {"input": "c", "output": 7}]), encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert f"{path}:2: field 'output'" in str(e.value)

    path.write_text('[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: malformed JSON")):
        read_examples(path)

    path.write_text(json.dumps({"input": "a", "output": "b"}), encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list"):
        read_examples(path)


def test_csv_file(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        writer.writerow(["Summarise.", "Text, with a comma\nand a newline.", "Short."])
        writer.writerow(["Name a colour.", "", "Blue."])
    data = read_examples(path)
    assert data.shape == "alpaca"
    assert data.examples[0].messages == user_assistant("Summarise.\n\nText, with a comma\nand a newline.", "Short.")
    assert data.examples[1].messages == user_assistant("Name a colour.", "Blue.")


def test_csv_row_errors_name_the_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("prompt,completion\nhello,world\nonly-one-value\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: fewer values")):
        read_examples(path)
    path.write_text("prompt,completion\nhello,world\na,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: more values")):
        read_examples(path)
    path.write_text("prompt,completion\nhello,world\n  ,\n", encoding="utf-8")
    # a row of empty cells is skipped, not an error
    assert len(read_examples(path).examples) == 1
    path.write_text("prompt,completion\nhello,world\n,world\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: field 'prompt': empty text")):
        read_examples(path)
    # an empty answer is no read error: the row is read, and cleaning drops and counts it
    path.write_text("prompt,completion\nhello,world\nhi,\n", encoding="utf-8")
    examples = read_examples(path).examples
    assert [e.references for e in examples] == [("world",), ("",)]
    kept, dropped = clean(examples, normalize=True, dedup=True, near_dedup=False, threshold=0.85)
    assert kept == examples[:1]
    assert dropped["empty"] == 1


# --------------------------------------------------------------------------- references


def test_several_references_as_a_list(jsonl):
    rows = [
        {"prompt": "Greet.", "completion": ["Hello.", "Hi there."]},
        {"input": "x", "output": ["y1", "y2", "y3"]},
    ]
    ex = read_examples(jsonl("refs.jsonl", rows[:1])).examples[0]
    assert ex.references == ("Hello.", "Hi there.")
    assert ex.messages[-1] == {"role": "assistant", "content": "Hello."}  # the first one is trained on
    ex = to_example(rows[1], "input_output")
    assert ex.references == ("y1", "y2", "y3")


def test_several_references_in_messages(jsonl):
    row = {"messages": [{"role": "user", "content": "Greet."}, {"role": "assistant", "content": ["Hello.", "Hi."]}]}
    (ex,) = read_examples(jsonl("refs.jsonl", [row])).examples
    assert ex.references == ("Hello.", "Hi.")
    assert ex.messages[-1]["content"] == "Hello."


def test_empty_reference_list_is_an_error(jsonl):
    path = jsonl("refs.jsonl", [{"prompt": "p", "completion": []}])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: field 'completion'")):
        read_examples(path)


# --------------------------------------------------------------------------- errors


def error_of(path: Path, shape: str = "auto") -> str:
    with pytest.raises(DataError) as e:
        read_examples(path, shape)
    message = str(e.value)
    assert "\n" not in message
    assert isinstance(e.value, LmtuneError) and e.value.exit_code == 2
    return message


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": }\n', encoding="utf-8")
    message = error_of(path)
    assert f"{path}:2: malformed JSON" in message
    assert "column" in message


def test_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n["text", "b"]\n', encoding="utf-8")
    assert f"{path}:2: expected a JSON object per line, found a list" in error_of(path)


@pytest.mark.parametrize(
    ("bad_row", "field", "what"),
    [
        ({"prompt": "c", "completion": 42}, "completion", "expected text, found a number"),
        ({"prompt": ["c"], "completion": "d"}, "prompt", "expected text, found a list"),
        ({"prompt": None, "completion": "d"}, "prompt", "expected text, found null"),
        ({"prompt": "c"}, "completion", "missing"),
        ({"prompt": "   ", "completion": "d"}, "prompt", "empty text"),
    ],
    ids=["number", "list", "null", "missing", "empty"],
)
def test_bad_field_names_file_line_and_field(jsonl, bad_row, field, what):
    path = jsonl("bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": "b"}, bad_row])
    assert f"{path}:3: field '{field}': {what}" in error_of(path, "prompt_completion")


def test_several_bad_rows_are_reported_together(jsonl):
    rows = [{"input": "a", "output": 1}, {"input": "b", "output": "ok"}, {"input": 2, "output": "c"}]
    path = jsonl("bad.jsonl", rows)
    message = error_of(path)
    assert f"{path}:1: field 'output'" in message
    assert f"{path}:3: field 'input'" in message


def test_errors_are_capped(jsonl):
    path = jsonl("bad.jsonl", [{"text": i} for i in range(25)])
    message = error_of(path)
    assert message.count("field 'text'") == 10
    assert "first 10 shown" in message


def test_non_utf8_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    message = error_of(path)
    assert f"{path}:2: not UTF-8 text" in message
    assert "0xe9" in message


def test_unknown_role(jsonl):
    row = {"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    message = error_of(jsonl("bad.jsonl", [row]))
    assert "bad.jsonl:1: field 'messages[0].role': unknown role 'human'" in message
    assert "system, user, assistant" in message


def test_last_turn_not_assistant(jsonl):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [*good["messages"], {"role": "user", "content": "Bye"}]}
    message = error_of(jsonl("bad.jsonl", [good, bad]))
    assert "bad.jsonl:2: field 'messages': the last turn must be the assistant's answer" in message


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "user"}, {"role": "assistant", "content": "x"}], "messages[0]"),
        ([{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}], "messages[0].content"),
        ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}], "messages[0].content"),
        ([{"role": "system", "content": ""}, *user_assistant("q", "a")], "messages[0].content"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}], "messages[1].content"),
    ],
    ids=["empty", "not-a-list", "no-content", "content-number", "user-empty", "system-empty", "answer-number"],
)
def test_bad_messages(jsonl, messages, field):
    message = error_of(jsonl("bad.jsonl", [{"messages": messages}]), "messages")
    assert f"bad.jsonl:1: field '{field}" in message


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \n "}]},
        {"prompt": "q", "completion": ""},
        {"input": "q", "output": "   "},
        {"instruction": "q", "output": ""},
        {"question": "q", "rationale": "r", "answer": ""},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
    ],
    ids=["messages", "messages-blank", "prompt_completion", "input_output", "alpaca", "cot", "sharegpt"],
)
def test_empty_answer_is_read_then_dropped_by_cleaning(jsonl, row):
    data = read_examples(jsonl("rows.jsonl", [row, _with_answer(row, "fine")]))
    assert len(data.examples) == 2  # no read error
    kept, dropped = clean(data.examples, normalize=True, dedup=True, near_dedup=False, threshold=0.85)
    assert kept == [data.examples[1]]
    assert dropped == {"empty": 1, "duplicate": 0}


def _with_answer(row: dict, answer: str) -> dict:
    if "messages" in row:
        return {**row, "messages": [row["messages"][0], {"role": "assistant", "content": answer}]}
    if "conversations" in row:
        return {**row, "conversations": [row["conversations"][0], {"from": "gpt", "value": answer}]}
    key = next(k for k in ("completion", "output", "answer") if k in row)
    return {**row, key: answer}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": " ", "completion": "a"}, "prompt"),
        ({"input": "", "output": "a"}, "input"),
        ({"instruction": "\t", "output": "a"}, "instruction"),
        ({"question": "", "rationale": "r", "answer": "a"}, "question"),
        ({"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "a"}]}, "messages[0].content"),
    ],
    ids=["prompt_completion", "input_output", "alpaca", "cot", "sharegpt"],
)
def test_empty_prompt_is_still_a_read_error(jsonl, row, field):
    assert f"rows.jsonl:1: field '{field}': " in error_of(jsonl("rows.jsonl", [row]))


def test_missing_and_empty_files(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    assert "no rows" in error_of(tmp_path / "empty.jsonl")
    # a folder is read as all its data files: here one file with only blank lines
    assert f"{tmp_path}: no rows" in error_of(tmp_path)
    (tmp_path / "empty.jsonl").unlink()
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")
    assert f"{tmp_path}: folder holds no .jsonl / .json / .csv / .parquet files" in error_of(tmp_path)


def test_example_prompt_is_last_user_turn():
    ex = Example(messages=({"role": "system", "content": "s"}, *user_assistant("q", "a")))
    assert ex.prompt == "q"


# --------------------------------------------------------------------------- train / held-out


def test_split_is_seeded_disjoint_and_complete():
    examples = [Example(text=f"doc {i}") for i in range(20)]
    held, train = split(examples, (0.25,), seed=3)  # held-out parts first, the rest last
    assert len(held) == 5 and len(train) == 15
    assert sorted(e.text for e in train + held) == sorted(e.text for e in examples)
    assert split(examples, (0.25,), seed=3) == [held, train]
    assert split(examples, (0.25,), seed=4) != [held, train]
    # each part keeps the input order
    assert [examples.index(e) for e in held] == sorted(examples.index(e) for e in held)
    # a fraction too small for the data holds nothing out: rounding, not "at least one"
    assert [len(p) for p in split(examples[:2], (0.01,), seed=0)] == [0, 2]


def test_load_task_data_rejects_text_eval_for_conversation_train(jsonl):
    train = jsonl("train.jsonl", [{"prompt": f"q{i}", "completion": "b"} for i in range(5)])
    held_out = jsonl("eval.jsonl", [{"text": "a document"}])
    with pytest.raises(DataError, match="does not match"):
        load_task_data(DataConfig(train=str(train), eval=str(held_out)), seed=0)
    data = load_task_data(DataConfig(train=str(train), val_fraction=0.4), seed=0)
    assert (len(data.train), len(data.eval)) == (3, 2)
    assert "40% of" in data.eval_source
    # too few rows for the fraction: no held-out rows is a clear error
    with pytest.raises(DataError, match="no held-out rows"):
        load_task_data(DataConfig(train=str(train), val_fraction=0.05), seed=0)
