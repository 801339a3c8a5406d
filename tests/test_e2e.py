"""End to end on the real embedded SmolLM2-135M-Instruct, through the CLI (tens of seconds)."""

from __future__ import annotations

import json

import pytest
from helpers import CHROMIUM, REPO_ROOT, open_in_chromium

from lmtune.cli import main

DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


@pytest.mark.slow
def test_demo_config_trains_and_improves(tmp_path, capsys, embedded_dir, monkeypatch):
    # the README's own-data command: configs/demo.yaml on the user's files, from a folder with no
    # data/demo (the forgetting figure and replay use the built-in general set)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "mine"
    assert main(["data", "demo", str(data), "--train-rows", "48", "--eval-rows", "12"]) == 0
    out = tmp_path / "run"
    argv = ["train", str(DEMO_CONFIG)]
    for setting in (
        "training.max_steps=3",
        "training.logging_steps=1",
        "training.eval_steps=2",
        f"data.train={data / 'train.jsonl'}",
        f"data.eval={data / 'eval.jsonl'}",
        "eval.max_samples=4",
        "eval.max_new_tokens=16",
        "eval.safety_limit=12",  # the demo's probe, smaller: 12 prompts per set, 8 tokens each
        "eval.safety_max_new_tokens=8",
        f"training.output_dir={out}",
    ):
        argv += ["--set", setting]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "finetuned" in printed and f"run folder: {out}" in printed
    assert "forgetting: perplexity on general" in printed
    assert not (tmp_path / "data").exists()

    metrics = json.loads((out / "metrics.json").read_text())
    base, finetuned = metrics["base"], metrics["finetuned"]
    assert finetuned["perplexity"] < base["perplexity"]
    assert metrics["run"]["steps"] == 3
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [line["step"] for line in log if "eval_loss" in line]
    assert evals[0] == 2 and set(evals) <= {2, 3}  # validation loss during training (and at its end)
    assert metrics["run"]["method"] == "lora"
    # what tuning cost, as the demo measures it offline: the safety probe on (a chat model), the hub benchmarks
    # skipped with a line each
    for model in ("base", "finetuned"):
        assert [metrics["safety"][model][s]["prompts"] for s in ("harmful", "lookalike")] == [12, 12]
    assert sorted(metrics["benchmarks"]["skipped"]) == ["arc_easy", "hellaswag"]
    assert "refusals: harmful requests, 12 (rule)" in printed and "benchmark hellaswag skipped: " in printed
    assert len((out / "safety_finetuned.jsonl").read_text().splitlines()) == 24
    assert metrics["run"]["base_weights"] == str(embedded_dir)
    for m in (base, finetuned):
        assert m["generation"]["samples"] == 4
        assert len(m["bleu"]["precisions"]) == 4
        assert set(m["rouge"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}

    # the adapter loads with plain PEFT, no lmtune involved; its base is the cached HF copy
    from peft import AutoPeftModelForCausalLM, PeftModel

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(embedded_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    assert isinstance(model, PeftModel)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == metrics["run"]["trainable_params"]

    # the run's report.html renders in a real browser, with the table and the loss curves
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (make test installs it as root)")
    shot = tmp_path / "report.png"
    seen = open_in_chromium(out / "report.html", shot)
    assert seen["table_visible"]
    assert f"{base['perplexity']:.3f}" in seen["table"] and f"{finetuned['perplexity']:.3f}" in seen["table"]
    assert seen["images"]["Loss curves"] is True and all(seen["images"].values())
    assert shot.stat().st_size > 10_000
