"""``lmtune plan`` and ``per_device_train_batch_size: auto``: named parts, batch choice, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_run_raw

from lmtune.cli import main
from lmtune.config import validate_config
from lmtune.errors import ConfigError, LmtuneError
from lmtune.plan.command import parse_size, plan_run

PARTS = ("libraries and runtime", "weights", "optimizer state", "gradients", "activations (longest batch)",
         "logits (one loss chunk)", "evaluation and generation", "allocator slack")  # fmt: skip


@pytest.fixture(scope="module")
def wide_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A small random Llama wide enough that a batch of 8 keeps tens of MB more for backward than a batch of 4."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wide-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def raw_config(model_dir: Path, task_files: Any, out: Path, **training: Any) -> dict[str, Any]:
    raw = tiny_run_raw(model_dir, *task_files, out, method="lora")
    raw["training"].update(max_steps=-1, num_train_epochs=1, report_to="none", **training)
    raw["eval"].update(base=False, metrics=["perplexity"])
    return raw


def test_sizes_read_as_users_write_them():
    assert parse_size("6GB") == parse_size("6G") == parse_size("6144MB") == parse_size("6144") == 6 << 30
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    with pytest.raises(LmtuneError, match="--memory-budget: 'lots' is not a size"):
        parse_size("lots")


def test_plan_names_each_part_and_the_larger_batch_needs_more(wide_llama_dir, task_files, tmp_path):
    cfg = validate_config(raw_config(wide_llama_dir, task_files, tmp_path / "run", per_device_train_batch_size="auto"))
    lines: list[str] = []
    plan = plan_run(cfg, echo=lines.append)
    assert list(plan.parts) == list(PARTS)
    *fixed, gradients, activations, logits, evaluation, slack = plan.parts.values()
    live = sum(fixed) + max(gradients + activations + logits, evaluation)
    assert plan.peak == live + slack and abs(slack - 0.10 * live) <= 1  # freed memory the trim has not handed back
    assert set(plan.candidates) == {8, 4, 2, 1}
    assert plan.candidates[8] > plan.candidates[4] >= plan.candidates[2] >= plan.candidates[1]
    assert plan.batch == 8 and plan.accumulation == 1  # the machine has room for the largest
    assert plan.steps == 2 and plan.tokens > 0 and plan.train_seconds > 0  # 16 rows, global batch 8
    assert "predicted peak memory" in lines[0] and not (tmp_path / "run").exists()  # nothing written


def test_auto_batch_under_a_budget_that_fits_only_four_picks_four_and_doubles_accumulation(
    wide_llama_dir, task_files, tmp_path
):
    """Fresh processes, as a user runs them: the plan's per-batch peaks, then a train under a budget between 4 and 8."""
    config = tmp_path / "run.yaml"
    raw = raw_config(wide_llama_dir, long_rows(tmp_path), tmp_path / "run", per_device_train_batch_size="auto")
    raw["data"]["max_length"] = 256
    config.write_text(yaml.safe_dump(raw))
    planned = lmtune("plan", str(config))
    line = next(x for x in planned.splitlines() if "predicted peak per batch size" in x)
    peaks = {int(b): float(mb.replace(",", "")) for b, mb in re.findall(r"(\d+): ([\d,]+) MB", line)}
    # the step peaks are measured (VmHWM) and vary by ~30 MB between processes: a gap well above that
    assert peaks[8] - peaks[4] > 100, line
    lmtune("train", str(config), "--memory-budget", f"{(peaks[4] + peaks[8]) / 2:.0f}MB")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    plan = metrics["run"]["plan"]
    assert (plan["batch"], plan["gradient_accumulation_steps"]) == (4, 2)
    assert metrics["run"]["steps"] == 2  # the global batch stayed 8: 16 rows, one epoch, two optimizer steps
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["training"]["per_device_train_batch_size"] == "auto"  # the user's config as given


def long_rows(folder: Path) -> tuple[Path, Path]:
    """16 training rows of ~200 tokens: a batch of 8 keeps far more for backward than a batch of 4."""
    import random

    words = "rain sun wind cloud snow fog storm clear cold warm dry wet calm gust".split()
    draw = random.Random(0)
    rows = [{"prompt": f"Forecast {i}:", "completion": " ".join(draw.choices(words, k=180))} for i in range(20)]
    train, held_out = folder / "long_train.jsonl", folder / "long_eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[16:]))
    return train, held_out


def lmtune(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_budget_too_small_for_one_example_is_one_line_and_leaves_nothing(
    wide_llama_dir, task_files, tmp_path, capsys
):
    config = tmp_path / "run.yaml"
    raw = raw_config(wide_llama_dir, task_files, tmp_path / "run", per_device_train_batch_size="auto")
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config), "--memory-budget", "10MB"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmtune: error: training.per_device_train_batch_size: even batch 1 needs") and "\n" not in err
    assert "over the memory budget of 10 MB" in err
    assert not (tmp_path / "run").exists()
    assert main(["plan", str(config), "--memory-budget", "many"]) == 2
    assert (
        capsys.readouterr().err.strip() == "lmtune: error: --memory-budget: 'many' is not a size (e.g. 6GB or 6000MB)"
    )


def test_auto_batch_is_refused_where_no_plan_chooses_it(tiny_llama_dir, task_files, tmp_path):
    raw = raw_config(tiny_llama_dir, task_files, tmp_path / "run", per_device_train_batch_size="auto", plan=False)
    with pytest.raises(ConfigError, match="auto is chosen by the plan"):
        validate_config(raw)


def test_timed_steps_run_the_optimizer_and_leave_every_weight_as_it_was(tiny_llama_dir, tmp_path):
    """The probe's steps do the run's optimizer work (Trainer's own optimizer, clipping) at learning rate 0."""
    import random
    from contextlib import nullcontext

    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from lmtune.data.collate import PadCollator
    from lmtune.plan.probe import time_steps

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    draw = random.Random(0)
    rows = [{"input_ids": [draw.randrange(1, 100) for _ in range(draw.randrange(8, 24))]} for _ in range(16)]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, weight_decay=0.1, max_grad_norm=1.0,
                             report_to="none")  # fmt: skip
    loss = lambda batch: model(**batch).loss  # noqa: E731
    samples = [rows[:4], rows[4:8], rows[8:12]]
    trims = []
    per_token, per_step = time_steps(model, loss, PadCollator(0), samples, nullcontext(), args, lambda: trims.append(1))
    assert per_token > 0 and per_step > 0
    assert len(trims) == 2  # the run's trim after every other step (steps 0 and 2 of 3): training trims on some
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())


def test_run_positions_count_the_padding_of_the_batches_an_epoch_draws():
    """Rows of 4 and 12 tokens in batches of 2: a mixed batch computes 24 positions for 16 tokens."""
    from lmtune.data.collate import PadCollator
    from lmtune.plan.probe import run_positions

    rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in [4, 12] * 8]
    counted = run_positions(PadCollator(0), rows, batch=2, micro_batches=8, seed=0)
    # one epoch's 8 batches: every 12 sits in a batch 12 wide, every 4 in a batch 4 or 12 wide
    assert 8 * 12 + 8 * 4 <= counted <= 16 * 12
    assert counted == run_positions(PadCollator(0), rows, batch=2, micro_batches=8, seed=0)
    # beyond the batches it collates, the rest count at their mean
    assert run_positions(PadCollator(0), rows, batch=2, micro_batches=800, seed=0, most=8) == 100 * counted
    assert run_positions(PadCollator(0), [], batch=2, micro_batches=8, seed=0) == 0
