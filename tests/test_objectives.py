"""``objective:`` dpo / kto / orpo / simpo / reward / grpo on TRL's trainers, on the tiny random Llama."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import PAIRS, tiny_run_raw, write_jsonl

from lmtune.config import validate_config
from lmtune.errors import ConfigError, DataError
from lmtune.pipeline import finetune

HELD_OUT = [
    {"prompt": f"Add {a} and {b}.", "chosen": f"{a} plus {b} is {a + b}.", "rejected": f"It is {a * b + 7}."}
    for a, b in ((5, 1), (2, 7), (6, 6), (8, 0))
]
GSM8K_LIKE = [
    {"prompt": f"Tom has {a} apples and buys {b} more. How many apples? End with #### and the number.",
     "answer": f"He has {a} + {b} = {a + b} apples.\n#### {a + b}"}
    for a, b in ((2, 3), (4, 1), (5, 5), (7, 2), (3, 3), (1, 8), (6, 2), (9, 1))
]  # fmt: skip


def objective_raw(tmp_path: Path, model_dir: Path, objective: str, train: list, held: list) -> dict[str, Any]:
    raw = tiny_run_raw(model_dir, write_jsonl(tmp_path / "train.jsonl", train),
                       write_jsonl(tmp_path / "eval.jsonl", held), tmp_path / "run")  # fmt: skip
    raw["objective"] = objective
    raw["eval"] = {"batch_size": 4} if objective == "reward" else \
        {"max_samples": 4, "max_new_tokens": 8, "batch_size": 4, "reference": None, "metrics": ["bleu"]}  # fmt: skip
    raw["training"]["report_to"] = "none"
    if objective == "grpo":  # its held-out measures are the reward functions' means
        del raw["eval"]["metrics"], raw["eval"]["max_new_tokens"]
        raw["grpo"] = {"reward_functions": ["number_match", "format"], "num_generations": 2,
                       "max_completion_length": 8}  # fmt: skip
    return raw


def run_capturing_model(monkeypatch, raw: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The run's metrics and the model it trained, as the trainer held it at the end."""
    from transformers import TrainerCallback

    captured = {}

    class Capture(TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            captured["model"] = model

    metrics = finetune(validate_config(raw), echo=lambda *_: None, callbacks=[Capture()])
    return metrics, captured["model"].eval()


def log_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def probe(model_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Add 5 and 1."}], tokenize=False) + "6."
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


@pytest.mark.parametrize("objective", ["dpo", "kto", "orpo", "simpo", "grpo"])
def test_each_policy_objective_trains_saves_and_reloads_with_plain_peft(
    monkeypatch, tmp_path: Path, tiny_llama_dir: Path, objective: str
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train, held = (GSM8K_LIKE[:6], GSM8K_LIKE[6:]) if objective == "grpo" else (PAIRS, HELD_OUT)
    metrics, trained = run_capturing_model(monkeypatch, objective_raw(tmp_path, tiny_llama_dir, objective, train, held))
    run = tmp_path / "run"
    assert metrics["objective"] == objective and (run / "metrics.json").is_file()
    assert (run / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, run).eval()
    ids = probe(tiny_llama_dir)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, trained(input_ids=ids).logits)
    lines = log_lines(run)
    assert any("loss" in line for line in lines)
    if objective == "grpo":
        assert any("reward" in line for line in lines)
        assert set(metrics["finetuned"]["rewards"]) == {"number_match", "format"}
    else:
        for side in ("base", "finetuned"):
            p = metrics[side]["preference"]
            assert p["pairs"] == len(HELD_OUT) and 0 <= p["accuracy"] <= 1
            assert p["margin"] == pytest.approx(p["chosen_logp"] - p["rejected_logp"])
        assert "kl_from_reference" in metrics["finetuned"]


def test_dpo_at_step_zero_is_log_2_with_zero_rewards(monkeypatch, tmp_path: Path, tiny_llama_dir: Path) -> None:
    """A fresh LoRA adapter (B = 0) leaves the policy equal to the reference: loss log 2, rewards 0."""
    raw = objective_raw(tmp_path, tiny_llama_dir, "dpo", PAIRS, HELD_OUT)
    raw["training"]["max_steps"] = 1
    run_capturing_model(monkeypatch, raw)
    first = log_lines(tmp_path / "run")[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0 and first["rewards/margins"] == 0


def test_reward_objective_saves_a_plain_sequence_classifier(monkeypatch, tmp_path: Path, tiny_llama_dir: Path):
    from transformers import AutoModelForSequenceClassification

    metrics, trained = run_capturing_model(monkeypatch, objective_raw(tmp_path, tiny_llama_dir, "reward", PAIRS,
                                                                      HELD_OUT))  # fmt: skip
    run = tmp_path / "run"
    assert not (run / "adapter_config.json").exists()
    scorer = AutoModelForSequenceClassification.from_pretrained(run, dtype=torch.float32).eval()
    ids = probe(tiny_llama_dir)
    with torch.no_grad():
        assert torch.allclose(scorer(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)
    for side in ("base", "finetuned"):
        assert metrics[side]["reward_pairs"]["pairs"] == len(HELD_OUT)


def test_objective_and_method_that_do_not_fit_are_refused(tmp_path: Path, tiny_llama_dir: Path) -> None:
    raw = objective_raw(tmp_path, tiny_llama_dir, "dpo", PAIRS, HELD_OUT)
    raw["method"] = "prefix_tuning"
    with pytest.raises(ConfigError, match="objective dpo trains with method"):
        validate_config(raw)
    raw = objective_raw(tmp_path, tiny_llama_dir, "grpo", PAIRS, HELD_OUT)
    raw["grpo"]["reward_functions"] = ["no_such_builtin"]
    with pytest.raises(ConfigError, match="grpo.reward_functions"):
        validate_config(raw)


def test_dpo_on_prompt_completion_data_names_the_shape(tmp_path: Path, tiny_llama_dir: Path) -> None:
    rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS + HELD_OUT]
    raw = objective_raw(tmp_path, tiny_llama_dir, "dpo", rows[: len(PAIRS)], rows[len(PAIRS) :])
    with pytest.raises(DataError, match="objective dpo needs preference pairs"):
        finetune(validate_config(raw), echo=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_number_reward_reads_gsm8k_and_boxed_answers() -> None:
    from lmtune.objectives.rewards import number_match

    completions = [[{"role": "assistant", "content": "so 5.\n#### 5"}], "The answer is \\boxed{1,200}", "five"]
    assert number_match([], completions, answer=["#### 5", "1200", "#### 5"]) == [1.0, 1.0, 0.0]


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is absent")
def test_a_preference_run_report_shows_both_models_measures_in_chromium(monkeypatch, tmp_path, tiny_llama_dir):
    from playwright.sync_api import sync_playwright

    raw = objective_raw(tmp_path, tiny_llama_dir, "dpo", PAIRS, HELD_OUT)
    raw["training"]["logging_steps"] = 1
    metrics, _ = run_capturing_model(monkeypatch, raw)
    page_file = tmp_path / "run" / "report.html"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            text = page.inner_text("body")
            row = next(line for line in text.splitlines() if line.startswith("preference accuracy"))
            base, tuned = metrics["base"]["preference"]["accuracy"], metrics["finetuned"]["preference"]["accuracy"]
            assert f"{base:.4f}" in row and f"{tuned:.4f}" in row
            assert page.locator("img[alt='Preference and reward measures']").count() == 1
        finally:
            browser.close()


@pytest.mark.slow
def test_a_reward_model_trained_here_judges_another_run(tmp_path: Path) -> None:
    """objective: reward on the embedded model, then that folder as eval.reward_model of a DPO run."""
    from helpers import EMBEDDED

    from lmtune.data.demo import write_preference_demo

    train, held = write_preference_demo(tmp_path / "data", n_train=24, n_eval=6)
    common = {
        "model": {"name": EMBEDDED},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "data": {"train": str(train), "eval": str(held), "max_length": 128},
        "eval": {"metrics": ["bleu"], "max_samples": 6, "max_new_tokens": 24, "reference": None},
    }
    training = {"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-4, "logging_steps": 1,
                "save_strategy": "no", "report_to": "none"}  # fmt: skip
    judge = tmp_path / "judge"
    # a reward model's measure is held-out pair accuracy: the generation settings are the policy run's only
    finetune(validate_config({**common, "objective": "reward", "eval": {"reference": None},
                              "training": {**training, "output_dir": str(judge)}}), echo=lambda *_: None)  # fmt: skip
    assert (judge / "model.safetensors").is_file() and not (judge / "adapter_config.json").exists()
    eval_section = {**common["eval"], "reward_model": str(judge)}
    raw = {**common, "objective": "dpo", "eval": eval_section,
           "training": {**training, "output_dir": str(tmp_path / "policy")}}  # fmt: skip
    metrics = finetune(validate_config(raw), echo=lambda *_: None)
    rows = {n: (tmp_path / "policy" / f"predictions_{n}.jsonl").read_text().splitlines() for n in ("base", "finetuned")}
    base, tuned = ([json.loads(line)["reward"] for line in rows[n]] for n in ("base", "finetuned"))
    wins = sum(t > b for b, t in zip(base, tuned, strict=True))
    losses = sum(t < b for b, t in zip(base, tuned, strict=True))
    comparison = metrics["reward_comparison"]
    assert comparison["pairs"] == len(base) == 6
    assert comparison["finetuned_higher"] == wins / 6 and comparison["base_higher"] == losses / 6


def test_a_test_split_of_pairs_reads_back_as_the_same_pairs(tmp_path: Path) -> None:
    from lmtune.data.formats import read_examples
    from lmtune.pipeline import example_row

    source = read_examples(write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:3]))
    kto = read_examples(
        write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "Add 1 and 1.", "completion": "2.", "label": False}])
    )
    for data in (source, kto):
        again = read_examples(write_jsonl(tmp_path / "again.jsonl", [example_row(ex) for ex in data.examples]))
        assert [(e.messages, e.rejected, e.label) for e in again.examples] == [
            (e.messages, e.rejected, e.label) for e in data.examples
        ]
