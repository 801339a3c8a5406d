"""Crash safety: a run killed at any step resumes and ends exactly where an uninterrupted run ends.

The training process is a real ``lmtune train`` subprocess, killed with SIGKILL (or sent
Ctrl-C) at a step drawn from a seeded generator; its final adapter weights are compared
with those of an uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import tiny_run_raw, write_jsonl

from lmtune.checkpoints import COMMITTED, committed_checkpoints
from lmtune.cli import main

STEPS = 40
KILL_SEED = 7  # the kill step comes from this seed, so a failure can be replayed


def resumable_config(tmp_path: Path, model_dir: Path, task_files: tuple[Path, Path], out: Path, **training) -> Path:
    """A run that checkpoints every step, with dropout and gradient accumulation (both must resume exactly)."""
    raw = tiny_run_raw(model_dir, *task_files, out)
    raw["lora"]["dropout"] = 0.1
    raw["training"].update(
        {
            "max_steps": STEPS,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "save_strategy": "steps",
            "save_steps": 1,
            "save_total_limit": 2,
            **training,
        }
    )
    raw["eval"].update(base=False, metrics=["perplexity"])
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def lmtune(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lmtune", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        **kwargs,
    )  # fmt: skip


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> None:
    marker = out / f"checkpoint-{step}" / COMMITTED
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no checkpoint-{step} after {timeout} s"
        time.sleep(0.02)


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def assert_same_weights(a: Path, b: Path, tol: float = 1e-6) -> None:
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, f"weights differ by up to {worst:.3g}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_llama_dir, shared_task_files):
    tmp = tmp_path_factory.mktemp("straight")
    out = tmp / "straight"
    cfg = resumable_config(tmp, tiny_llama_dir, shared_task_files, out)
    assert main(["train", str(cfg)]) == 0
    return out


@pytest.fixture(scope="module")
def shared_task_files(tmp_path_factory):
    """The task files, shared by every run of this module (resume checks their content)."""
    from helpers import EVAL_ROWS, TRAIN_ROWS

    tmp = tmp_path_factory.mktemp("data")
    return write_jsonl(tmp / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp / "held_out.jsonl", EVAL_ROWS)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(
    tmp_path, tiny_llama_dir, shared_task_files, uninterrupted
):
    kill_after = random.Random(KILL_SEED).randint(2, STEPS // 2)
    out = tmp_path / "killed"
    cfg = resumable_config(tmp_path, tiny_llama_dir, shared_task_files, out)
    proc = lmtune("train", str(cfg))
    wait_for_checkpoint(proc, out, kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    resumed_at = committed_checkpoints(out)[-1].name

    done = lmtune("train", str(cfg), "--resume")
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr[-3000:]
    assert f"resuming from {out / resumed_at}" in stdout
    assert_same_weights(out, uninterrupted)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["resumed_from"] == resumed_at
    assert metrics["run"]["steps"] == STEPS
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == list(range(1, STEPS + 1)), "the log repeats or skips steps"


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(
    tmp_path, tiny_llama_dir, shared_task_files, uninterrupted
):
    out = tmp_path / "interrupted"
    cfg = resumable_config(tmp_path, tiny_llama_dir, shared_task_files, out, save_steps=1000)
    proc = lmtune("train", str(cfg))
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 240
    while not (log.is_file() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    (line,) = [x for x in stderr.splitlines() if x.startswith("lmtune: error:")]
    assert "interrupted: checkpoint-" in line and "run the same command again to resume" in line
    assert "Traceback" not in stderr
    (saved,) = committed_checkpoints(out)  # save_steps=1000: the only checkpoint is the one Ctrl-C made

    again = lmtune("train", str(cfg))  # no flag: an unfinished run of the same config resumes by itself
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert f"resuming from {saved}" in stdout
    assert_same_weights(out, uninterrupted)


def test_a_changed_config_or_data_refuses_to_resume_and_says_what_changed(tmp_path, tiny_llama_dir, task_files, capsys):
    out = tmp_path / "run"
    cfg = resumable_config(tmp_path, tiny_llama_dir, task_files, out, max_steps=2)
    raw = yaml.safe_load(cfg.read_text())
    assert main(["train", str(cfg)]) == 0
    (out / "metrics.json").unlink()  # as if killed after its last checkpoint
    capsys.readouterr()

    raw["training"]["learning_rate"] = 1e-3
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["train", str(cfg), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume the run in" in err and "training.learning_rate: 0.005 -> 0.001" in err

    raw["training"]["learning_rate"] = 5e-3
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    train_file = task_files[0]
    train_file.write_text(train_file.read_text() + '{"prompt": "Add 1 and 1.", "completion": "2"}\n')
    assert main(["train", str(cfg), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"data file {train_file} changed" in err
    assert committed_checkpoints(out), "a refused resume must not touch the run folder"


def test_resume_needs_an_unfinished_run(tmp_path, tiny_llama_dir, task_files, capsys):
    out = tmp_path / "run"
    cfg = resumable_config(tmp_path, tiny_llama_dir, task_files, out, max_steps=2)
    assert main(["train", str(cfg), "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "--resume"]) == 2
    assert "finished run (nothing to resume)" in capsys.readouterr().err
    assert main(["train", str(cfg), "--resume", "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path, tiny_llama_dir, task_files, capsys):
    out = tmp_path / "run"
    cfg = resumable_config(tmp_path, tiny_llama_dir, task_files, out, max_steps=3)
    assert main(["train", str(cfg)]) == 0
    (out / "metrics.json").unlink()
    # a kill during the save of step 3: its folder exists, its commit marker does not
    (out / "checkpoint-3" / COMMITTED).unlink()
    (out / "checkpoint-3" / "optimizer.pt").write_bytes(b"cut off")
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 0
    assert f"resuming from {out / 'checkpoint-2'}" in capsys.readouterr().out


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from lmtune.files import atomic_write, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def dies_halfway(f):
        f.write(b"new, half")
        raise KeyboardInterrupt  # what a kill looks like from inside the process

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_halfway)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
