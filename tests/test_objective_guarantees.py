"""Preference, reward and KTO runs get what supervised runs get: exact resume after SIGKILL, several processes
under torchrun, early stopping that stops, and the guards' one-line stops.

Tiny random Llama in float32, dropout 0, so one process with batch 8 and two with batch 4 see the same pairs per
step (DDP averages the two halves' gradients; one process averages the eight) and must agree to rounding.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PAIRS, lmtune, losses, tiny_run_raw, write_jsonl

from lmtune.checkpoints import COMMITTED

HELD_OUT = [
    {"prompt": f"Add {a} and {b}.", "chosen": f"{a} plus {b} is {a + b}.", "rejected": f"{a} plus {b} is {a + b + 3}."}
    for a, b in ((5, 1), (2, 7), (6, 6), (8, 0))
]
LOSS_TOLERANCE = 5e-3


def write_run(tmp_path: Path, model_dir: Path, name: str, objective: str, held: list | None = None,
              **training: Any) -> Path:  # fmt: skip
    train_file = write_jsonl(tmp_path / f"{name}-train.jsonl", PAIRS)
    held_file = write_jsonl(tmp_path / f"{name}-eval.jsonl", held or HELD_OUT)
    raw = tiny_run_raw(model_dir, train_file, held_file, tmp_path / name)
    raw["objective"] = objective
    raw["training"].update({"report_to": "none", "max_steps": -1, "num_train_epochs": 3,
                            "per_device_train_batch_size": 8, **training})  # fmt: skip
    raw["eval"] = {"base": False, "reference": None, "batch_size": 4}
    if objective != "reward":
        raw["eval"].update(metrics=["bleu"], max_samples=2, max_new_tokens=4)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (run / "adapter_model.safetensors").is_file() else "model.safetensors"
    return load_file(run / name)


def largest_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.mark.parametrize("objective", ["dpo", "reward", "kto"])
def test_two_processes_with_half_the_batch_log_the_losses_of_one(tmp_path, tiny_llama_dir, objective) -> None:
    one = lmtune("train", str(write_run(tmp_path, tiny_llama_dir, "one", objective)))
    assert one.returncode == 0, one.stderr[-2000:]
    two = lmtune("train", str(write_run(tmp_path, tiny_llama_dir, "two", objective, per_device_train_batch_size=4)),
                 "--nproc", "2")  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    run_one = json.loads((tmp_path / "one" / "metrics.json").read_text())["run"]
    run_two = json.loads((tmp_path / "two" / "metrics.json").read_text())["run"]
    assert (run_one["world_size"], run_two["world_size"]) == (1, 2) and run_two["global_batch"] == 8
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 6
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=LOSS_TOLERANCE), f"step {step}"
    assert largest_difference(tmp_path / "one", tmp_path / "two") < 1e-4
    assert two.stdout.count("run folder:") == 1  # rank 0 alone printed the run's lines


def test_a_dpo_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path, tiny_llama_dir) -> None:
    steps = {"max_steps": 12, "per_device_train_batch_size": 4, "save_strategy": "steps", "save_steps": 1,
             "save_total_limit": 2}  # fmt: skip
    whole = lmtune("train", str(write_run(tmp_path, tiny_llama_dir, "whole", "dpo", **steps)))
    assert whole.returncode == 0, whole.stderr[-2000:]
    config = write_run(tmp_path, tiny_llama_dir, "killed", "dpo", **steps)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lmtune", "train", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while not (run / "checkpoint-3" / COMMITTED).is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before checkpoint-3 was committed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    resumed = lmtune("train", str(config), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    assert largest_difference(tmp_path / "whole", run) <= 1e-6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["resumed_from"].startswith("checkpoint-") and metrics["run"]["steps"] == 12
    assert metrics["run"]["git_commit"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["run"][
        "git_commit"]  # fmt: skip


def test_early_stopping_stops_a_preference_run_whose_held_out_loss_rises(tmp_path, tiny_llama_dir) -> None:
    """Held-out pairs that prefer what training rejects: the better DPO fits, the worse its held-out loss."""
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in HELD_OUT]
    config = write_run(tmp_path, tiny_llama_dir, "run", "dpo", held=swapped, max_steps=20, learning_rate=5e-2,
                       per_device_train_batch_size=4, eval_strategy="steps", eval_steps=1,
                       early_stopping_patience=1)  # fmt: skip
    done = lmtune("train", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())["run"]
    assert run["stopped_early"] is True and run["steps"] < 20
    assert run["best_step"] < run["steps"]
    evals = [json.loads(x)["eval_loss"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
             if "eval_loss" in x]  # fmt: skip
    assert run["best_eval_loss"] == pytest.approx(min(evals))
    assert "eval_perplexity" not in (tmp_path / "run" / "train_log.jsonl").read_text()  # a DPO loss is no LM loss


def test_a_non_finite_loss_stops_a_preference_run_with_the_guards_line(tmp_path, tiny_llama_dir) -> None:
    config = write_run(tmp_path, tiny_llama_dir, "run", "dpo", max_steps=4, learning_rate=1e30,
                       per_device_train_batch_size=4, max_grad_norm=0.0)  # fmt: skip
    done = lmtune("train", str(config))
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("lmtune: error:")]
    assert "is not a finite number" in line and "Traceback" not in done.stderr
