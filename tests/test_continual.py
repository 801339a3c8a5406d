"""Staged fine-tuning, the forgetting figure, EWC and replay, on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.config import ModelConfig, validate_config
from lmtune.errors import ConfigError
from lmtune.methods.continual import ewc_penalty, fisher_diagonal, replay_rows
from lmtune.models import load_model
from lmtune.pipeline import finetune
from lmtune.stages import run_stages

GENERAL = [{"prompt": f"Name colour number {i}.", "completion": f"Colour {i} is blue."} for i in range(6)]


def test_forgetting_figure_and_ewc_replay_run(tmp_path, tiny_llama_dir, task_files):
    ref = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["eval"]["reference"] = str(ref)
    raw["continual"] = {"reference": str(ref), "ewc_weight": 10.0, "replay_fraction": 0.5}
    lines: list[str] = []
    metrics = finetune(validate_config(raw), echo=lines.append)
    f = metrics["forgetting"]
    assert f["reference"] == str(ref)
    assert f["perplexity_increase_percent"] == pytest.approx(
        100 * (f["finetuned_perplexity"] / f["base_perplexity"] - 1)
    )
    # replay adds as many reference rows as training rows at fraction 0.5
    assert metrics["run"]["train_examples"] == 2 * len(TRAIN_ROWS)
    assert any(line.startswith("EWC: Fisher information from 6 reference rows") for line in lines)
    assert any("forgetting: perplexity on" in line for line in lines)


def test_regularisers_need_a_reference(tmp_path, tiny_llama_dir, task_files):
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["continual"] = {"ewc_weight": 1.0}
    with pytest.raises(ConfigError, match="continual"):
        validate_config(raw)


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_distance(tiny_llama_dir, tokenizer):
    model, _, _ = load_model(ModelConfig(name=str(tiny_llama_dir)))
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}, {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}]
    fisher = fisher_diagonal(model, rows, tokenizer.pad_token_id, batch_size=1)
    assert set(fisher) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all((f >= 0).all() for f in fisher.values()) and any((f > 0).any() for f in fisher.values())
    penalty = ewc_penalty(model, fisher, weight=2.0)
    assert penalty().item() == 0.0
    name, param = next((n, p) for n, p in model.named_parameters() if fisher[n].sum() > 0)
    with torch.no_grad():
        param.add_(0.1)
    expected = 2.0 / 2 * (fisher[name] * 0.1**2).sum().item()
    assert penalty().item() == pytest.approx(expected, rel=1e-4)


def test_replay_rows_make_up_the_fraction():
    ref = [{"input_ids": [i]} for i in range(3)]
    rows = replay_rows(ref, n_train=9, fraction=0.25)
    assert len(rows) == 3 and rows == ref
    assert [r["input_ids"][0] for r in replay_rows(ref, n_train=10, fraction=0.5)] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert replay_rows([], 10, 0.5) == []


def test_stages_run_in_sequence_from_merged_weights(tmp_path, tiny_llama_dir, task_files):
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL[:4])
    general_eval = write_jsonl(tmp_path / "general_eval.jsonl", GENERAL[4:])
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["stages"] = [
        {"name": "general", "data": {"train": str(general), "eval": str(general_eval)}},
        {"name": "task", "training": {"max_steps": 2}},
    ]
    combined = run_stages(validate_config(raw), echo=lambda *a: None)
    assert [r["stage"] for r in combined["stages"]] == ["general", "task"]
    stage1, stage2 = tmp_path / "run" / "1-general", tmp_path / "run" / "2-task"
    assert (stage1 / "merged" / "model.safetensors").is_file()
    assert json.loads((stage2 / "metrics.json").read_text())["run"]["steps"] == 2
    # stage 2 started from stage 1's merged weights, not from the original model
    assert combined["stages"][1]["run"]["model"] == str(stage1 / "merged")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["finetuned"] == json.loads(json.dumps(combined["stages"][1]["finetuned"]))
    assert saved["train_time_s"] == pytest.approx(sum(r["train_time_s"] for r in combined["stages"]))


def test_stage_errors_name_the_stage(tmp_path, tiny_llama_dir, task_files):
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["stages"] = [{"name": "one", "training": {"learning_rat": 1}}]
    with pytest.raises(ConfigError, match=r"stages\[0\] \(one\).*learning_rat.*did you mean 'learning_rate'"):
        validate_config(raw)
    raw["stages"] = [{"model": {"name": "x"}}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.model"):
        validate_config(raw)


def test_the_built_in_general_set_needs_no_file(tmp_path, tiny_llama_dir, task_files, monkeypatch):
    from lmtune.data.general import QA, reference_examples

    monkeypatch.chdir(tmp_path)  # no data/demo here: the default eval.reference still works
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["eval"].pop("reference", None)
    raw["continual"] = {"reference": "general-fit", "replay_fraction": 0.25}
    cfg = validate_config(raw)
    assert cfg.eval.reference == "general"  # forgetting is measured by default
    metrics = finetune(cfg, echo=lambda *_: None)
    assert metrics["forgetting"]["reference"] == "general" and metrics["forgetting"]["threshold_percent"] == 25.0
    general, fit = reference_examples("general"), reference_examples("general-fit")
    assert len(general) + len(fit) == len(QA) and not {e.prompt for e in general} & {e.prompt for e in fit}


def test_a_missing_reference_file_names_the_built_in_sets(monkeypatch, tmp_path, tiny_llama_dir, task_files):
    monkeypatch.chdir(tmp_path)  # the relative path must not exist (it does in a checkout after `make demo`)
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["eval"]["reference"] = "data/demo/general_eval.jsonl"
    missing = r"eval.reference: data/demo/general_eval.jsonl: no such file.*general \| general-fit"
    with pytest.raises(ConfigError, match=missing):
        finetune(validate_config(raw), echo=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("increase", "warned"), [(10.0, False), (25.0, False), (25.1, True), (80.0, True)])
def test_forgetting_above_the_threshold_names_the_levers(increase, warned):
    from lmtune.report import forgetting_line

    f = {"reference": "general", "base_perplexity": 4.0, "finetuned_perplexity": 4.0 * (1 + increase / 100),
         "perplexity_increase_percent": increase, "threshold_percent": 25.0}  # fmt: skip
    line = forgetting_line({"forgetting": f})
    assert line.startswith(f"forgetting: perplexity on general 4.000 -> {f['finetuned_perplexity']:.3f}")
    assert ("above the 25% threshold (eval.forgetting_threshold)" in line) == warned
    assert ("continual.replay_fraction" in line and "training.learning_rate" in line) == warned
