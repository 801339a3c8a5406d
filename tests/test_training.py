"""Evaluation during training: validation loss, early stopping with the best checkpoint, generation metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.config import validate_config
from lmtune.pipeline import finetune


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture
def overfitting_raw(tmp_path: Path, tiny_llama_dir: Path) -> dict:
    """Four training rows learnt at a high constant rate, held out against answers of another style.

    The held-out loss first falls (the chat layout and EOS are shared) and then rises as the
    model memorises its four answers: a run that over-fits on purpose.
    """
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS[:4])
    other_style = [{"prompt": r["prompt"], "completion": "The sum is unknown to me."} for r in EVAL_ROWS]
    held_out = write_jsonl(tmp_path / "eval.jsonl", other_style)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "run", method="full")
    raw["training"].update(
        max_steps=40,
        learning_rate=2e-2,
        lr_scheduler_type="constant",
        eval_strategy="steps",
        eval_steps=2,
        report_to="none",
    )
    raw["eval"].update(base=False, metrics=["perplexity"])
    return raw


def test_early_stopping_stops_an_overfitting_run_and_restores_the_best_checkpoint(overfitting_raw, tmp_path):
    from safetensors.torch import load_file

    overfitting_raw["training"]["early_stopping_patience"] = 2
    metrics = finetune(validate_config(overfitting_raw), echo=lambda *a: None)
    run = tmp_path / "run"
    evals = [(line["step"], line["eval_loss"]) for line in _log(run) if "eval_loss" in line]
    best_step, best_loss = min(evals, key=lambda e: e[1])
    facts = metrics["run"]

    assert facts["stopped_early"] is True and facts["steps"] < 40
    # patience 2 at one evaluation every 2 steps: the run ends 4 steps after its best evaluation
    assert evals[-1][0] == best_step + 2 * 2 == facts["steps"]
    assert facts["best_step"] == best_step and facts["best_checkpoint"] == f"checkpoint-{best_step}"
    assert facts["best_eval_loss"] == pytest.approx(best_loss)
    assert 2 < best_step < evals[-1][0]  # it did improve first, then got worse

    # the saved model is the best checkpoint's weights, not the last step's
    final = load_file(run / "model.safetensors")
    best = load_file(run / f"checkpoint-{best_step}" / "model.safetensors")
    assert final.keys() == best.keys()
    assert all((final[k] == best[k]).all() for k in final)
    last = run / f"checkpoint-{facts['steps']}" / "model.safetensors"
    assert last.is_file()  # and the last checkpoint differs: the reload really happened
    assert any((load_file(last)[k] != final[k]).any() for k in final)


def test_evaluation_lines_carry_validation_perplexity(overfitting_raw, tmp_path):
    overfitting_raw["training"]["max_steps"] = 4
    finetune(validate_config(overfitting_raw), echo=lambda *a: None)
    evals = [line for line in _log(tmp_path / "run") if "eval_loss" in line]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["eval_perplexity"] == pytest.approx(math.exp(e["eval_loss"])) for e in evals)


def test_generation_metrics_every_n_evaluations(overfitting_raw, tmp_path):
    overfitting_raw["training"]["max_steps"] = 6
    overfitting_raw["eval"].update(metrics=["perplexity", "bleu", "rouge"], generate_every=2, generate_samples=3)
    finetune(validate_config(overfitting_raw), echo=lambda *a: None)
    log = _log(tmp_path / "run")
    generated = [line for line in log if any(k.startswith("gen_") for k in line)]
    assert [g["step"] for g in generated] == [4]  # evaluations at 2, 4, 6: every second one
    assert {"gen_bleu", "gen_rouge1", "gen_rougeL"} <= generated[0].keys()
    assert 0 <= generated[0]["gen_bleu"] <= 1


def test_tensorboard_logs_by_default(overfitting_raw, tmp_path):
    del overfitting_raw["training"]["report_to"]
    overfitting_raw["training"]["max_steps"] = 2
    finetune(validate_config(overfitting_raw), echo=lambda *a: None)
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))


def test_early_stopping_needs_evaluations(overfitting_raw):
    from lmtune.errors import ConfigError

    overfitting_raw["training"].update(eval_strategy="no", early_stopping_patience=2)
    with pytest.raises(ConfigError, match="early_stopping_patience needs eval_strategy"):
        validate_config(overfitting_raw)


def test_reward_model_scores_both_models_answers(overfitting_raw, tmp_path, tokenizer):
    from helpers import save_llama_reward

    from lmtune.evaluate.reward import load_reward_model, reward_scores

    judge = save_llama_reward(tmp_path / "judge", tokenizer)
    overfitting_raw["training"].update(max_steps=2, eval_strategy="no")
    overfitting_raw["eval"].update(base=True, metrics=["perplexity", "bleu"], reward_model=str(judge))
    metrics = finetune(validate_config(overfitting_raw), echo=lambda *a: None)
    run = tmp_path / "run"

    model, tok = load_reward_model(str(judge))
    for name in ("base", "finetuned"):
        rows = [json.loads(line) for line in (run / f"predictions_{name}.jsonl").read_text().splitlines()]
        expected = reward_scores(model, tok, [r["prompt"] for r in rows], [r["prediction"] for r in rows])
        assert [r["reward"] for r in rows] == pytest.approx(expected, abs=1e-5)
        summary = metrics[name]["reward"]
        assert summary["n"] == len(rows) and summary["mean"] == pytest.approx(sum(expected) / len(expected))
    c = metrics["reward_comparison"]
    assert c["pairs"] == len(rows) and c["finetuned_higher"] + c["ties"] + c["base_higher"] == pytest.approx(1)
    assert metrics["metric_settings"]["reward"]["model"] == str(judge)
    assert "reward" in (run / "report.md").read_text()


def test_bf16_autocast_is_accepted_on_a_cpu_only_machine(overfitting_raw):
    import torch

    from lmtune.train import training_arguments

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: Trainer takes bf16 there as it is")
    overfitting_raw["training"]["bf16"] = True
    args = training_arguments(validate_config(overfitting_raw))  # Trainer refused this before ("use_cpu")
    assert args.bf16 and args.use_cpu
