"""Train -> save -> reload round trips of ``lmtune.pipeline.finetune`` on tiny random models."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import torch
from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_run_raw, write_jsonl
from rouge_score import rouge_scorer

from lmtune import pipeline
from lmtune.config import ModelConfig, load_config, validate_config
from lmtune.models import load_model

M_KEYS = {
    "perplexity", "perplexity_detail", "bleu", "rouge", "chrf", "exact_match", "token_f1", "generation", "eval_time_s",
}  # fmt: skip
BLEU_KEYS = {"bleu", "precisions", "brevity_penalty", "length_ratio", "hyp_len", "ref_len"}
ROUGE_KEYS = {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_finetune(monkeypatch, raw: dict[str, Any]) -> tuple[dict[str, Any], Any, list[str]]:
    """finetune() on a config; returns (metrics, the trained in-memory model, echoed lines)."""
    captured: dict[str, Any] = {}
    real_apply = pipeline.apply_method

    def spy(model: Any, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        captured["model"] = real_apply(model, cfg, *args, **kwargs)
        return captured["model"]

    monkeypatch.setattr(pipeline, "apply_method", spy)
    lines: list[str] = []
    metrics = pipeline.finetune(validate_config(raw), echo=lines.append)
    return metrics, captured["model"].eval(), lines


def probe_ids(tokenizer: Any) -> torch.Tensor:
    return torch.tensor(tokenizer(["Add 2 and 2. The answer is four."], add_special_tokens=False)["input_ids"])


def logits_of(model: Any, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def check_metrics_shape(m: dict[str, Any]) -> None:
    assert set(m) == M_KEYS
    assert m["perplexity"] > 1
    assert set(m["bleu"]) == BLEU_KEYS
    assert len(m["bleu"]["precisions"]) == 4
    assert set(m["rouge"]) == ROUGE_KEYS
    for value in [m["bleu"]["bleu"], *m["bleu"]["precisions"], *m["rouge"].values()]:
        assert 0 <= value <= 1
    assert m["generation"]["samples"] == 4
    assert m["perplexity_detail"]["examples"] == len(EVAL_ROWS)


def check_run_folder(out: Path, metrics: dict[str, Any]) -> None:
    files = ("config.yaml", "metrics.json", "train_log.jsonl", "report.md", "tokenizer.json", "tokenizer_config.json")
    for name in files:
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert {"base", "finetuned", "train_time_s", "run", "metric_settings"} <= set(saved)
    assert saved["train_time_s"] > 0
    phases = saved["run"]["phases_s"]  # where the run's time went, in the order of the run
    assert list(phases) == ["checks_and_data", "model_and_tokens", "method_and_plan", "base_evaluation",
                            "training_and_save", "final_evaluation"]  # fmt: skip
    assert all(v >= 0 for v in phases.values()) and phases["training_and_save"] >= saved["train_time_s"]
    check_metrics_shape(saved["base"])
    check_metrics_shape(saved["finetuned"])
    assert saved["run"]["steps"] == 3
    assert saved["run"]["train_examples"] == len(TRAIN_ROWS)

    # the resolved config loads back as the config of this run
    assert load_config(out / "config.yaml").training.output_dir == str(out)

    log = read_jsonl(out / "train_log.jsonl")
    losses = [row for row in log if "loss" in row]
    assert [row["step"] for row in losses] == [1, 2, 3]  # logging_steps: 1
    assert all(row["loss"] > 0 for row in losses)

    for name in ("base", "finetuned"):
        predictions = read_jsonl(out / f"predictions_{name}.jsonl")
        assert len(predictions) == 4
        assert [p["prompt"] for p in predictions] == [r["prompt"] for r in EVAL_ROWS[:4]]
        assert [p["reference"] for p in predictions] == [r["completion"] for r in EVAL_ROWS[:4]]
        assert all(isinstance(p["prediction"], str) for p in predictions)

    # BLEU / ROUGE in metrics.json are the libraries' own scores of the saved predictions
    predictions = read_jsonl(out / "predictions_finetuned.jsonl")
    hyps = [p["prediction"] for p in predictions]
    refs = [p["reference"] if isinstance(p["reference"], list) else [p["reference"]] for p in predictions]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs)))]
    expected = sacrebleu.corpus_bleu(hyps, streams)
    bleu = saved["finetuned"]["bleu"]
    assert bleu["bleu"] == pytest.approx(expected.score / 100)
    assert bleu["precisions"] == pytest.approx([p / 100 for p in expected.precisions])
    assert bleu["brevity_penalty"] == pytest.approx(expected.bp)
    assert bleu["length_ratio"] == pytest.approx(expected.ratio)
    scorer = rouge_scorer.RougeScorer(sorted(ROUGE_KEYS), use_stemmer=False)
    for key in ROUGE_KEYS:
        best = [max(scorer.score(r, h)[key].fmeasure for r in rs) for h, rs in zip(hyps, refs, strict=True)]
        assert saved["finetuned"]["rouge"][key] == pytest.approx(sum(best) / len(best))

    report = (out / "report.md").read_text()
    assert "| finetuned |" in report and "| base |" in report


def trainable_count(lines: list[str]) -> tuple[int, int]:
    (line,) = [x for x in lines if x.startswith("method:")]
    found = re.search(r"trainable params: ([\d,]+) / ([\d,]+)", line)
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


# --------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"], ids=["q_v", "all-linear"])
def test_lora_round_trip(monkeypatch, tmp_path, tiny_llama_dir, task_files, targets):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    raw = tiny_run_raw(tiny_llama_dir, *task_files, out, method="lora")
    raw["lora"]["target_modules"] = targets
    metrics, trained, lines = run_finetune(monkeypatch, raw)
    check_run_folder(out, metrics)
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == tiny_llama_dir
    assert adapter["r"] == 4

    # only LoRA weights are trained, and the count shown is PEFT's own
    trainable_names = [n for n, p in trained.named_parameters() if p.requires_grad]
    assert trainable_names and all("lora_" in n for n in trainable_names)
    all_linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    wanted = all_linear if targets == "all-linear" else set(targets)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable_names} == wanted
    peft_trainable, peft_total = trained.get_nb_trainable_parameters()
    assert trainable_count(lines) == (peft_trainable, peft_total)
    assert metrics["run"]["trainable_params"] == peft_trainable
    assert 0 < peft_trainable < peft_total / 10

    # training changed the model: LoRA B matrices start at zero and are no longer zero
    assert any(p.abs().sum() > 0 for n, p in trained.named_parameters() if "lora_B" in n)

    # reload three ways: lmtune, plain PEFT, and the model still in memory agree
    loaded, tokenizer, base = load_model(ModelConfig(name=str(out)))
    assert isinstance(loaded, PeftModel)
    assert Path(base) == tiny_llama_dir
    ids = probe_ids(tokenizer)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    reference = logits_of(trained, ids)
    torch.testing.assert_close(logits_of(loaded, ids), reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_of(plain, ids), reference, atol=1e-5, rtol=0)
    # ... and differ from the base model's
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), ids)
    assert (base_logits - reference).abs().max() > 1e-4

    # the saved run evaluates to the numbers in metrics.json
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import read_examples
    from lmtune.evaluate.run import evaluate_model

    examples = read_examples(task_files[1]).examples
    again, _ = evaluate_model(loaded, tokenizer, Encoder(tokenizer, max_length=96), examples, ["perplexity"])
    assert again["perplexity"] == pytest.approx(metrics["finetuned"]["perplexity"], rel=1e-4)


# --------------------------------------------------------------------------- full fine-tuning


def test_full_round_trip(monkeypatch, tmp_path, tiny_llama_dir, task_files):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    metrics, trained, lines = run_finetune(monkeypatch, tiny_run_raw(tiny_llama_dir, *task_files, out, method="full"))
    check_run_folder(out, metrics)
    assert (out / "model.safetensors").is_file()
    assert (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()

    total = sum(p.numel() for p in trained.parameters())
    assert all(p.requires_grad for p in trained.parameters())
    assert trainable_count(lines) == (total, total)
    assert metrics["run"]["trainable_percent"] == 100

    loaded, tokenizer, base = load_model(ModelConfig(name=str(out)))
    assert Path(base) == out
    ids = probe_ids(tokenizer)
    reference = logits_of(trained, ids)
    torch.testing.assert_close(logits_of(loaded, ids), reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_of(AutoModelForCausalLM.from_pretrained(out), ids), reference, atol=1e-5, rtol=0)
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), ids)
    assert (base_logits - reference).abs().max() > 1e-4


def test_training_lowers_training_loss_and_held_out_perplexity(monkeypatch, tmp_path, tiny_llama_dir, task_files):
    """A few more steps at a higher rate on a tiny task: the model must learn something."""
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run", method="full")
    raw["training"].update(max_steps=8, learning_rate=1e-2)
    raw["eval"].update(metrics=["perplexity"])
    metrics, _, _ = run_finetune(monkeypatch, raw)
    assert metrics["finetuned"]["perplexity"] < metrics["base"]["perplexity"] / 2
    losses = [row["loss"] for row in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0]
    assert "bleu" not in metrics["finetuned"] and "rouge" not in metrics["finetuned"]
    assert not (tmp_path / "run" / "predictions_finetuned.jsonl").exists()  # nothing was generated


# --------------------------------------------------------------------------- plain layout, GPT-2


def test_gpt2_plain_layout_end_to_end(monkeypatch, tmp_path, tiny_gpt2_dir, task_files):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    raw = tiny_run_raw(tiny_gpt2_dir, *task_files, out, method="lora")
    raw["lora"]["target_modules"] = ["c_attn"]
    metrics, trained, lines = run_finetune(monkeypatch, raw)
    # the tokenizer has no chat template, so `template: auto` picks the plain layout
    assert any("(prompt_completion, plain layout)" in x for x in lines)
    check_run_folder(out, metrics)
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "chat_template.jinja").exists()

    loaded, tokenizer, _ = load_model(ModelConfig(name=str(out)))
    assert not tokenizer.chat_template
    ids = probe_ids(tokenizer)
    reference = logits_of(trained, ids)
    torch.testing.assert_close(logits_of(loaded, ids), reference, atol=1e-5, rtol=0)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), out)
    torch.testing.assert_close(logits_of(plain, ids), reference, atol=1e-5, rtol=0)


def test_explicit_plain_template_with_a_chat_tokenizer(monkeypatch, tmp_path, tiny_llama_dir, task_files):
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run", method="lora")
    raw["data"]["template"] = "plain"
    raw["eval"]["base"] = False
    metrics, _, lines = run_finetune(monkeypatch, raw)
    assert any("plain layout" in x for x in lines)
    assert "base" not in metrics and not (tmp_path / "run" / "predictions_base.jsonl").exists()
    check_metrics_shape(metrics["finetuned"])


def test_held_out_split_from_train_when_no_eval_file(monkeypatch, tmp_path, tiny_llama_dir, task_files):
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run", method="lora")
    raw["data"]["eval"] = None
    raw["data"]["val_fraction"] = 0.25
    raw["eval"].update(metrics=["perplexity"], base=False)
    raw["training"].update(eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=2)
    metrics, _, _ = run_finetune(monkeypatch, raw)
    assert metrics["run"]["train_examples"] == 12 and metrics["run"]["eval_examples"] == 4
    assert metrics["run"]["eval_source"].startswith("25% of")
    # validation loss during training (eval_strategy: steps) lands in the log too
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    eval_losses = [row for row in log if "eval_loss" in row]
    assert [row["step"] for row in eval_losses] == [3]
    assert math.isfinite(eval_losses[0]["eval_loss"]) and eval_losses[0]["eval_loss"] > 0


# --------------------------------------------------------------------------- task mixtures


def test_mixture_of_two_tasks_reports_metrics_per_task(monkeypatch, tmp_path, tiny_llama_dir):
    """Two sources with weights and no eval file: a validation split per source, metrics per task."""
    folder = tmp_path / "data"
    folder.mkdir()
    add_rows = [{"prompt": f"Add {a} and {b}.", "completion": f"{a + b}."} for a in range(5) for b in range(4)]
    add = write_jsonl(folder / "add.jsonl", add_rows)
    cap = write_jsonl(
        folder / "capital.jsonl",
        [{"question": f"Capital of country {i}?", "answer": f"City {i}."} for i in range(12)],
    )
    out = tmp_path / "run"
    raw = tiny_run_raw(tiny_llama_dir, add, add, out, method="lora")
    raw["data"] = {
        "train": [
            {"path": str(add), "task": "a", "weight": 3},
            {"path": str(cap), "task": "b", "weight": 1, "columns": {"prompt": "question", "completion": "answer"}},
        ],
        "val_fraction": 0.25,
        "test_fraction": 0.1,
        "max_length": 64,
    }
    raw["eval"].update(max_samples=4, max_new_tokens=4, base=False)
    metrics, _, lines = run_finetune(monkeypatch, raw)

    # add: 20 rows -> 5 val, 2 test, 13 train; capital: 12 rows -> 3 val, 1 test, 8 train; 21 mixed 3:1
    report = json.loads((out / "data_report.json").read_text())
    assert report["lmtune_data_report"] == 1
    assert [(s["task"], s["rows_read"], s["train"], s["validation"], s["test"]) for s in report["sources"]] == [
        ("a", 20, 13, 5, 2),
        ("b", 12, 8, 3, 1),
    ]
    assert report["tasks"] == {"a": 16, "b": 5}
    assert report["mixture"] == {"a": 3, "b": 1}
    assert report["splits"] == {"train": 21, "eval": 8, "test": 3}
    assert metrics["run"]["train_examples"] == 21 and metrics["run"]["eval_examples"] == 8
    assert metrics["run"]["tasks"] == ["a", "b"]

    test_rows = read_jsonl(out / "test.jsonl")
    assert [r["task"] for r in test_rows] == ["a", "a", "b"]
    assert all(set(r) == {"messages", "task", "source"} for r in test_rows)

    saved = json.loads((out / "metrics.json").read_text())
    finetuned = saved["finetuned"]
    assert set(finetuned["by_task"]) == {"a", "b"}
    for task, n in (("a", 5), ("b", 3)):
        m = finetuned["by_task"][task]
        assert m["perplexity"] > 1 and m["perplexity_detail"]["examples"] == n
        assert m["generation"]["samples"] == 2  # max_samples 4, taken evenly across the tasks
        assert 0 <= m["bleu"]["bleu"] <= 1 and set(m["rouge"]) == ROUGE_KEYS
    # the per-task perplexities pool into the overall one: token-weighted, not a mean of means
    detail = {t: finetuned["by_task"][t]["perplexity_detail"] for t in ("a", "b")}
    pooled = sum(d["nll"] * d["tokens"] for d in detail.values()) / sum(d["tokens"] for d in detail.values())
    assert finetuned["perplexity_detail"]["nll"] == pytest.approx(pooled)
    assert finetuned["perplexity_detail"]["tokens"] == sum(d["tokens"] for d in detail.values())

    predictions = read_jsonl(out / "predictions_finetuned.jsonl")
    assert sorted(p["task"] for p in predictions) == ["a", "a", "b", "b"]
    assert any("tasks in training: a 16, b 5" in x for x in lines)
