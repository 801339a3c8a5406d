"""Fault injection: every kind of bad input ``lmtune train`` must catch before the slow part starts.

Each case writes its bad input into ``tmp_path/faults``, runs the real command, and checks the
one-line message (file, line, field, what was expected), exit status 2, and that no run folder
was left behind.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.cli import main
from lmtune.data.formats import MAX_ERRORS, read_examples

PAIR = '{"prompt": "Add 1 and 2.", "completion": "3"}\n'
MESSAGES_OK = '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'


def data_case(content: str | bytes, name: str = "train.jsonl"):
    """A training file with ``content``; ``{file}`` in the expected parts stands for its path."""
    return {"file": (name, content)}


# id -> (what to set up, the parts the one-line message must hold)
CASES = {
    "malformed-json-lines-all-reported": (
        data_case(PAIR + '{"prompt": "a" "completion": "b"}\n{bad\n'),
        ["{file}:2: malformed JSON (Expecting ',' delimiter", "{file}:3: malformed JSON"],
    ),
    "missing-field": (data_case(PAIR + '{"prompt": "a"}\n'), ["{file}:2: field 'completion': missing"]),
    "number-where-text": (
        data_case(PAIR + '{"prompt": 3, "completion": "b"}\n'),
        ["{file}:2: field 'prompt': expected text, found a number"],
    ),
    "list-where-text": (
        data_case(PAIR + '{"prompt": ["a"], "completion": "b"}\n'),
        ["{file}:2: field 'prompt': expected text, found a list"],
    ),
    "null-where-text": (
        data_case(PAIR + '{"prompt": null, "completion": "b"}\n'),
        ["{file}:2: field 'prompt': expected text, found null"],
    ),
    "empty-file": (data_case(""), ["{file}: no rows (the file is empty or holds only blank lines)"]),
    "only-blank-lines": (data_case("\n  \n\n"), ["{file}: no rows"]),
    "not-utf8": (
        data_case(PAIR.encode() + b'{"prompt": "caf\xe9", "completion": "b"}\n'),
        ["{file}:2: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"],
    ),
    "csv-missing-column": (
        data_case("prompt,answer\nAdd 1 and 2.,3\n", "train.csv"),
        ["objective sft needs answers", "'prompt_only' rows have none", "data.columns"],
    ),
    "csv-row-with-fewer-values": (
        data_case("prompt,completion\nAdd 1 and 2.,3\nAdd 2 and 2.\n", "train.csv"),
        ["{file}:3: fewer values than the header has columns (no value for completion)"],
    ),
    "mixed-shapes": (
        data_case(PAIR + MESSAGES_OK),
        ["{file}:2: rows of mixed shapes: this row is 'messages'", "but line 1 of {file} is 'prompt_completion'"],
    ),
    "messages-unknown-role": (
        data_case('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'),
        ["{file}:1: field 'messages[0].role': unknown role 'robot' (expected one of system, user, assistant)"],
    ),
    "messages-empty-content": (
        data_case('{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}\n'),
        ["{file}:1: field 'messages[0].content': expected non-empty text, found empty text"],
    ),
    "messages-no-assistant-turn": (
        data_case('{"messages": [{"role": "user", "content": "x"}]}\n'),
        ["{file}:1: field 'messages': the last turn must be the assistant's answer"],
    ),
    "path-does-not-exist": (
        {"set": ["data.train={faults}/nowhere.jsonl"]},
        ["data.train:", "nowhere.jsonl: no such file"],
    ),
    "folder-without-data-files": (
        {"folder": "empty_folder", "set": ["data.train={faults}/empty_folder"]},
        ["empty_folder: folder holds no .jsonl / .json / .csv / .parquet files"],
    ),
    "smaller-than-one-batch": (
        {
            "file": ("train.jsonl", PAIR * 1 + PAIR.replace("1 and 2", "2 and 2")),
            "set": ["training.per_device_train_batch_size=8"],
        },
        ["data.train: 2 training examples left", "fewer than one batch (training.per_device_train_batch_size: 8)"],
    ),  # fmt: skip
    "every-example-longer-than-max-length": (
        {"set": ["data.max_length=4"]},
        ["data.max_length: 4 tokens, and no training example keeps an answer token", "raise data.max_length"],
    ),
    "unknown-config-key": (
        {"set": ["training.learning_rat=0.1"]},
        ["training.learning_rat: unknown key (did you mean 'learning_rate'?)"],
    ),
    "wrong-type": (
        {"set": ["training.learning_rate=fast"]},
        ["training.learning_rate: input should be a valid number", "(found 'fast')"],
    ),
    "negative-learning-rate": (
        {"set": ["training.learning_rate=-0.1"]},
        ["training.learning_rate: input should be greater than 0 (found -0.1)"],
    ),
    "zero-batch-size": (
        {"set": ["training.per_device_train_batch_size=0"]},
        ["training.per_device_train_batch_size: input should be greater than 0"],
    ),
    "zero-epochs": (
        {"set": ["training.num_train_epochs=0", "training.max_steps=-1"]},
        ["training.num_train_epochs: input should be greater than 0"],
    ),
    "model-path-does-not-exist": (
        {"set": ["model.name={faults}/no_model"]},
        ["model.name:", "no_model: no such file or folder"],
    ),
    "hub-id-while-offline": (
        {"set": ["model.name=someone/some-model"]},
        [
            "model.name: 'someone/some-model'",
            "hub cannot be reached (offline?)",
            "a local folder, a .gguf file",
            "the embedded default 'smollm2-135m-instruct'",
        ],
    ),  # fmt: skip
    "gguf-file-that-is-not-gguf": (
        {"file": ("fake.gguf", "not a model"), "set": ["model.name={faults}/fake.gguf"]},
        ["model.name:", "fake.gguf: not a GGUF file (bad magic bytes)"],
    ),
}


def set_up(case: dict, faults: Path, train: Path) -> tuple[list[str], Path]:
    """The ``--set`` options of a case, and the file it is about (the training file by default)."""
    faults.mkdir(exist_ok=True)
    target = train
    if "file" in case:
        name, content = case["file"]
        target = faults / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if "folder" in case:
        (faults / case["folder"]).mkdir()
    sets = [s.format(faults=faults) for s in case.get("set", [])]
    if "file" in case and not target.name.endswith(".gguf"):
        sets.append(f"data.train={target}")
    return sets, target


@pytest.fixture
def config(tmp_path, tiny_llama_dir):
    train = write_jsonl(tmp_path / "good_train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(tmp_path / "good_held_out.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, train


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_no_run_folder(case, config, tmp_path, capsys):
    setup, parts = CASES[case]
    cfg, train = config
    sets, target = set_up(setup, tmp_path / "faults", train)
    argv = ["train", str(cfg)] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtune: error: "), err
    for part in parts:
        assert part.format(file=target, faults=tmp_path / "faults") in lines[0]
    assert not (tmp_path / "run").exists(), "a failed check must leave no run folder behind"


def test_up_to_max_errors_per_file_are_reported_at_once(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text(PAIR + '{"prompt": 1, "completion": "b"}\n' * (MAX_ERRORS + 5), encoding="utf-8")
    with pytest.raises(Exception) as e:
        read_examples(path)
    message = str(e.value)
    assert message.count("expected text, found a number") == MAX_ERRORS
    assert f"first {MAX_ERRORS} shown" in message and "\n" not in message


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + PAIR.encode() + PAIR.replace("1 and 2", "2 and 2").encode())
    data = read_examples(path)
    assert data.shape == "prompt_completion" and [ex.prompt for ex in data.examples][0] == "Add 1 and 2."


def test_debug_shows_the_traceback(config, tmp_path):
    cfg, _ = config
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{bad\n", encoding="utf-8")
    run = [sys.executable, "-m", "lmtune", "--debug", "train", str(cfg), "--set", f"data.train={bad}"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "DataError" in done.stderr and f"{bad}:1: malformed JSON" in done.stderr
