"""The ``lmtune`` command: exit status 2 with one ``lmtune: error:`` line, --help, data verbs, eval/generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import EVAL_ROWS, REPO_ROOT, TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.cli import main
from lmtune.config import DataConfig
from lmtune.data.encode import Encoder
from lmtune.data.formats import read_examples
from lmtune.data.prepare import load_task_data
from lmtune.errors import ConfigError


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def run_config(tmp_path, tiny_llama_dir, task_files):
    """A valid config file for a few-second run on the tiny Llama model."""
    train, held_out = task_files

    def make(**sections) -> Path:
        raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
        return write_config(tmp_path / "run.yaml", raw)

    return make


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmtune: error: ")
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- user errors


def test_bad_config_key(run_config, capsys):
    cfg = run_config()
    assert main(["train", str(cfg), "--set", "training.learning_rat=0.1"]) == 2
    line = one_error_line(capsys)
    assert str(cfg) in line
    assert "training.learning_rat: unknown key (did you mean 'learning_rate'?)" in line


def test_bad_data_file_names_file_and_line(run_config, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": 5}\n', encoding="utf-8")
    assert main(["train", str(run_config()), "--set", f"data.train={bad}"]) == 2
    line = one_error_line(capsys)
    assert f"{bad}:2: field 'completion': expected text, found a number" in line
    assert not (tmp_path / "run").exists()  # bad data fails before the run folder is made


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert f"{tmp_path / 'missing.yaml'}: no such config file" in one_error_line(capsys)


def test_unknown_model_folder(run_config, tmp_path, capsys):
    assert main(["train", str(run_config()), "--set", f"model.name={tmp_path / 'no-model'}"]) == 2
    assert "model.name:" in one_error_line(capsys)


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(ConfigError):
        main(["--debug", "train", str(tmp_path / "missing.yaml")])


def test_subprocess_exit_status_and_one_line(run_config, tmp_path):
    cfg = run_config(trainig={"max_steps": 3})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune", "train", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lmtune: error: ")
    assert "trainig: unknown key (did you mean 'training'?)" in lines[0]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_occupied_output_dir_needs_overwrite(run_config, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-9").mkdir(parents=True)
    (out / "checkpoint-9" / "optimizer.pt").write_bytes(b"old optimizer")
    (out / "metrics.json").write_text('{"finetuned": {"perplexity": 1.5}}\n')
    (out / "adapter_model.safetensors").write_bytes(b"old adapter")
    (out / "model.safetensors").write_bytes(b"old full model")
    (out / "notes.txt").write_text("my own notes\n")
    before = snapshot(out)

    assert main(["train", str(run_config())]) == 2
    line = one_error_line(capsys)
    assert f"training.output_dir: {out} already holds a finished run" in line
    assert "--overwrite" in line
    assert snapshot(out) == before  # nothing deleted or changed

    # with --overwrite the run replaces lmtune's files and leaves the user's own alone
    assert main(["train", str(run_config()), "--overwrite"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "my own notes\n"
    assert not (out / "checkpoint-9").exists()
    assert not (out / "model.safetensors").exists()  # a stale full model would shadow the adapter
    assert (out / "adapter_model.safetensors").read_bytes() != b"old adapter"
    assert "base" in json.loads((out / "metrics.json").read_text())


def test_output_dir_that_is_a_file(run_config, tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    assert main(["train", str(run_config())]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)


# --------------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "argv",
    [[], ["train"], ["eval"], ["generate"], ["data"], ["data", "check"], ["data", "demo"]],
    ids=lambda a: " ".join(a) or "lmtune",
)
def test_help_for_every_verb(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['lmtune', *argv])}")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == "lmtune 0.1.0"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train"])  # no config given
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- data verbs


def test_data_demo_writes_files(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["data", "demo", str(folder), "--train-rows", "30", "--eval-rows", "7"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {folder / 'train.jsonl'}, {folder / 'eval.jsonl'}")
    written = printed.removeprefix("wrote ").split(", ")
    assert sorted(written) == sorted(str(p) for p in folder.iterdir())  # every file it wrote, and only those
    train, held_out = read_examples(folder / "train.jsonl"), read_examples(folder / "eval.jsonl")
    assert (train.shape, held_out.shape) == ("prompt_completion", "prompt_completion")
    assert (len(train.examples), len(held_out.examples)) == (30, 7)
    assert not {e.prompt for e in train.examples} & {e.prompt for e in held_out.examples}
    # seeded: the same command writes the same files
    again = tmp_path / "again"
    assert main(["data", "demo", str(again), "--train-rows", "30", "--eval-rows", "7"]) == 0
    assert (again / "train.jsonl").read_bytes() == (folder / "train.jsonl").read_bytes()


def test_data_check_file_prints_and_writes_the_report(tmp_path, tiny_llama_dir, tokenizer, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", [*TRAIN_ROWS, TRAIN_ROWS[0], {"prompt": "Add.", "completion": " "}])
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir()
    argv = ["data", "check", str(path), "--model", str(tiny_llama_dir), "--output", str(report)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    saved = json.loads(report.read_text(encoding="utf-8"))
    assert saved["lmtune_data_report"] == 1
    assert saved["sources"] == [
        {
            "path": str(path),
            "role": "train",
            "task": "train",
            "format": "prompt_completion",
            "rows_read": 18,
            "dropped": {"empty": 1, "duplicate": 1},
            "kept": 16,
            "train": 14,
            "validation": 2,
            "test": 0,
            "stratified": False,
        }
    ]
    assert saved["splits"] == {"train": 14, "eval": 2, "test": 0}  # data check FILE: val_fraction 0.1, seed 42
    # token counts come from the --model tokenizer, in its chat layout
    encoder = Encoder(tokenizer)
    data = load_task_data(DataConfig(train=str(path)), seed=42)
    lengths = [len(encoder.encode(e)["input_ids"]) for e in data.train]
    assert saved["tokens"]["total"] == sum(lengths)
    assert saved["tokens"]["length"]["max"] == max(lengths)
    assert saved["warnings"] == ["14 training examples; generation tasks usually want ~1,000 or more"]
    assert out[0] == f"{path} (train, prompt_completion, task train): 18 read, 16 kept; dropped: empty 1, duplicate 1"
    assert out[1] == "splits (by prompt): train 14, eval 2, test 0 (one row per prompt)"
    assert out[-2] == "warning: 14 training examples; generation tasks usually want ~1,000 or more"
    assert out[-1] == f"report: {report}"

    # a report lmtune wrote may be replaced
    report.write_text(json.dumps({"lmtune_data_report": 1, "old": True}), encoding="utf-8")
    assert main(argv) == 0
    assert "old" not in json.loads(report.read_text(encoding="utf-8"))


def test_data_check_with_a_config(tmp_path, tiny_llama_dir, tokenizer, task_files, capsys):
    train, held_out = task_files
    encoder = Encoder(tokenizer)
    assert {len(encoder.encode(e)["input_ids"]) for e in read_examples(train).examples} == {47}
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run")
    raw["data"]["test_fraction"] = 0.25
    cfg = write_config(tmp_path / "run.yaml", raw)
    report = tmp_path / "data_report.json"
    overrides = ["--set", "data.max_length=46", "--set", "data.overlong=truncate"]
    assert main(["data", "check", "--config", str(cfg), *overrides, "--output", str(report)]) == 0
    saved = json.loads(report.read_text(encoding="utf-8"))
    assert [(s["role"], s["rows_read"], s["kept"]) for s in saved["sources"]] == [("train", 16, 16), ("eval", 5, 5)]
    assert saved["splits"] == {"train": 12, "eval": 5, "test": 4}
    # the --set overrides apply: every training row is 47 tokens, so each loses one
    assert saved["overlong"]["max_length"] == 46
    assert saved["overlong"]["train"] == {"dropped": 0, "truncated": 12, "tokens_cut": 12}
    assert saved["tokens"]["length"]["max"] == 46
    assert not (tmp_path / "run").exists()  # checking data starts no run
    assert f"report: {report}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "foreign",
    ['{"my": "results"}\n', '["lmtune_data_report"]\n', "not json at all\n", ""],
    ids=["other-json", "list-holding-the-key", "text", "empty"],
)
def test_data_check_refuses_to_overwrite_a_foreign_file(tmp_path, tiny_llama_dir, capsys, foreign):
    path = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    report = tmp_path / "precious.json"
    report.write_text(foreign, encoding="utf-8")
    before = report.stat().st_mtime_ns
    assert main(["data", "check", str(path), "--model", str(tiny_llama_dir), "--output", str(report)]) == 2
    line = one_error_line(capsys)
    assert f"--output {report}: exists and is not an lmtune data report" in line
    assert report.read_text(encoding="utf-8") == foreign
    assert report.stat().st_mtime_ns == before


def test_data_check_needs_a_file_or_a_config(capsys):
    assert main(["data", "check"]) == 2
    assert "give a FILE or --config" in one_error_line(capsys)


def test_data_check_bad_file(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok", \n', encoding="utf-8")
    assert main(["data", "check", str(path), "--output", str(tmp_path / "r.json")]) == 2
    assert f"{path}:2: malformed JSON" in one_error_line(capsys)
    assert not (tmp_path / "r.json").exists()


def test_data_check_bad_format_choice(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "check", str(tmp_path / "x.jsonl"), "--format", "yaml"])
    assert e.value.code == 2


# --------------------------------------------------------------------------- eval / generate


def test_eval_on_a_model_folder(tmp_path, tiny_llama_dir, task_files, capsys):
    _, held_out = task_files
    output = tmp_path / "out" / "metrics.json"
    argv = ["eval", "--model", str(tiny_llama_dir), "--data", str(held_out), "--max-samples", "2"]
    assert main([*argv, "--max-new-tokens", "4", "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(output.read_text())
    assert set(printed) >= {"perplexity", "bleu", "rouge", "generation"}
    assert saved["perplexity"] == printed["perplexity"] > 1
    assert "metric_settings" in saved
    predictions = [json.loads(x) for x in (tmp_path / "out" / "metrics.predictions.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in predictions] == [r["prompt"] for r in EVAL_ROWS[:2]]
    assert predictions[1]["reference"] == EVAL_ROWS[1]["completion"]


def test_eval_unknown_metric(tmp_path, tiny_llama_dir, task_files, capsys):
    argv = ["eval", "--model", str(tiny_llama_dir), "--data", str(task_files[1]), "--metrics", "perplexity,chrff"]
    assert main(argv) == 2
    assert "--metrics: unknown metric 'chrff'" in one_error_line(capsys)


def test_generate_prints_the_greedy_answer(tiny_llama_dir, tiny_llama, tokenizer, capsys):
    from lmtune.evaluate.generate import generate

    assert main(["generate", "--model", str(tiny_llama_dir), "--prompt", "Hello?", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    (expected,) = generate(tiny_llama, tokenizer, [Encoder(tokenizer).question_ids("Hello?")], max_new_tokens=6)
    assert printed == expected.text + "\n"


def test_generate_unknown_model(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "hi"]) == 2
    assert "no such file or folder" in one_error_line(capsys)


def test_eval_and_generate_on_a_run_folder_use_the_runs_layout(run_config, tmp_path, task_files, capsys):
    """A run trained with a system prompt and the plain layout is evaluated the way it was trained."""
    from lmtune.config import ModelConfig
    from lmtune.evaluate.generate import generate
    from lmtune.models import load_model

    cfg = run_config(data={"template": "plain", "system_prompt": "Answer with a sentence."}, eval={"base": False})
    assert main(["train", str(cfg)]) == 0
    out = tmp_path / "run"
    trained = json.loads((out / "metrics.json").read_text())["finetuned"]
    capsys.readouterr()

    assert main(["eval", "--model", str(out), "--data", str(task_files[1]), "--metrics", "perplexity"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["perplexity"] == pytest.approx(trained["perplexity"], rel=1e-5)
    for key in ("tokens", "examples"):
        assert printed["perplexity_detail"][key] == trained["perplexity_detail"][key]

    assert main(["generate", "--model", str(out), "--prompt", "Add 1 and 1.", "--max-new-tokens", "5"]) == 0
    model, tokenizer, _ = load_model(ModelConfig(name=str(out)))
    encoder = Encoder(tokenizer, template="plain", system_prompt="Answer with a sentence.")
    (expected,) = generate(model, tokenizer, [encoder.question_ids("Add 1 and 1.")], max_new_tokens=5)
    assert capsys.readouterr().out == expected.text + "\n"
