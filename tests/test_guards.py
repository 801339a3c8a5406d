"""Guards during training (non-finite loss or gradient, out of memory), safe loading, the run record."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
import torch
import transformers
import yaml
from helpers import tiny_run_raw

from lmtune.checkpoints import committed_checkpoints
from lmtune.cli import main
from lmtune.config import ModelConfig
from lmtune.errors import ModelError
from lmtune.models import load_model
from lmtune.provenance import RECORD


@pytest.fixture
def guarded_config(tmp_path, tiny_llama_dir, task_files):
    """A config file for a short run that checkpoints every step."""

    def make(**training) -> tuple:
        raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
        raw["training"].update({"max_steps": 6, "save_strategy": "steps", "save_steps": 1, **training})
        raw["eval"].update(base=False, metrics=["perplexity"])
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path, tmp_path / "run"

    return make


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("lmtune: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fail_at_call(monkeypatch, n: int, action) -> None:
    """Trainer.training_step runs ``action(model)`` instead of its normal course on its n-th call."""
    real = transformers.Trainer.training_step
    calls = {"n": 0}

    def patched(self, model, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, model, *args, **kwargs)
        return action(model, loss) if calls["n"] == n else loss

    monkeypatch.setattr(transformers.Trainer, "training_step", patched)


def test_a_diverging_run_stops_at_the_step_and_keeps_the_last_good_checkpoint(guarded_config, capsys):
    cfg, out = guarded_config(learning_rate=1e30, max_grad_norm=0.0)  # no clipping: the weights blow up
    raw = yaml.safe_load(cfg.read_text())
    # SDPA turns the blown-up weights into NaN at step 2; eager attention (auto's choice on CPU) saturates
    # them into a finite, constant loss of 10.80 instead: a broken model, but no non-finite number to catch
    raw["model"]["attn_implementation"] = "sdpa"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 1
    line = error_line(capsys)
    assert "training stopped at step " in line and "is not a finite number" in line
    step = int(line.split("training stopped at step ")[1].split(":")[0])
    kept = committed_checkpoints(out)
    assert kept and kept[-1].name == f"checkpoint-{step - 1}"
    assert f"the last good checkpoint is checkpoint-{step - 1}" in line
    assert "training.learning_rate (now 1e+30)" in line and "training.max_grad_norm" in line
    assert not (out / "metrics.json").exists()


def test_a_non_finite_gradient_names_its_step(guarded_config, capsys, monkeypatch):
    def poison(model, loss):
        next(p for p in model.parameters() if p.requires_grad).grad.fill_(float("nan"))
        return loss

    fail_at_call(monkeypatch, 3, poison)
    cfg, out = guarded_config()
    assert main(["train", str(cfg)]) == 1
    line = error_line(capsys)
    assert "training stopped at step 3: the gradient is not a finite number" in line
    assert "the last good checkpoint is checkpoint-2" in line


def test_out_of_memory_names_the_knobs(guarded_config, capsys, monkeypatch):
    def oom(model, loss):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fail_at_call(monkeypatch, 2, oom)
    cfg, _ = guarded_config()
    assert main(["train", str(cfg)]) == 1
    line = error_line(capsys)
    assert "out of memory at step 2 (CUDA out of memory. Tried to allocate 2.00 GiB)" in line
    for knob in ("per_device_train_batch_size", "gradient_accumulation_steps", "data.max_length",
                 "gradient_checkpointing", "method: lora"):  # fmt: skip
        assert knob in line


def test_the_run_record_names_config_data_model_and_versions(guarded_config, task_files, tmp_path, monkeypatch):
    work = tmp_path / "work"  # the user's project, a git work tree with one commit
    work.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    (work / "notes.txt").write_text("x")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "start"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.chdir(work)
    cfg, out = guarded_config(max_steps=1)
    assert main(["train", str(cfg)]) == 0
    assert record_of(out)["git"] == {"commit": head, "dirty": False}
    assert not [p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")], "pickles saved"
    record = record_of(out)
    assert record["config"]["training"]["max_steps"] == 1 and record["seed"] == 0
    for path in task_files:
        assert record["data"][str(path)].startswith("sha256:") and len(record["data"][str(path)]) == 71
    assert record["model"]["files"]["model.safetensors"].startswith("sha256:")
    assert len(record["model"]["tokenizer_sha256"]) == 64
    assert {"lmtune", "torch", "transformers", "peft"} <= set(record["versions"])
    assert set(record) >= {"python", "platform", "git", "config_sha256"}


def record_of(out):
    return json.loads((out / RECORD).read_text())


def test_same_config_data_and_seed_give_the_same_metrics(guarded_config, tmp_path):
    cfg, out = guarded_config(max_steps=3, save_strategy="no")
    assert main(["train", str(cfg)]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(["train", str(cfg), "--overwrite"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert first["finetuned"]["perplexity"] == second["finetuned"]["perplexity"]
    assert first["run"]["train_loss"] == second["run"]["train_loss"]


def pickle_only_copy(src, dst):
    """The tiny model as an old-style folder: config plus pytorch_model.bin (a pickle)."""
    from safetensors.torch import load_file

    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    torch.save(load_file(src / "model.safetensors"), dst / "pytorch_model.bin")
    return dst


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_llama_dir):
    folder = pickle_only_copy(tiny_llama_dir, tmp_path / "old-style")
    with pytest.raises(ModelError, match="pytorch_model.bin: its weights are only in pickle files"):
        load_model(ModelConfig(name=str(folder), dtype="float32"))
    model, _, _ = load_model(ModelConfig(name=str(folder), dtype="float32", allow_pickle=True))
    assert model.config.hidden_size == 32


def test_trust_remote_code_warns(tiny_llama_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="lmtune.models"):
        load_model(ModelConfig(name=str(tiny_llama_dir), dtype="float32", trust_remote_code=True))
    assert "model.trust_remote_code is on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtune.models"):
        load_model(ModelConfig(name=str(tiny_llama_dir), dtype="float32"))
    assert "trust_remote_code" not in caplog.text


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", "/etc"])
def test_stage_names_cannot_lead_outside_the_run_folder(tmp_path, tiny_llama_dir, task_files, capsys, name):
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / "run")
    raw["stages"] = [{"name": name}]
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["train", str(cfg)]) == 2
    assert f"stages[0].name: {name!r}: use a plain name" in error_line(capsys)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "run").exists()
