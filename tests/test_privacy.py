"""Differentially private LoRA (``privacy:``): Opacus's clipping, noise and accounting inside lmtune's Trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import EVAL_ROWS, tiny_run_raw, write_jsonl

from lmtune.config import validate_config
from lmtune.data.collate import PadCollator
from lmtune.privacy import default_delta, per_example_hooks, private_trainer_class, resolve_privacy
from lmtune.privacy.engine import per_example_loss, private_optimizer

PAD = 0
ROWS_48 = [
    {"prompt": f"Add {a} and {b}.", "completion": f"{a} plus {b} is {a + b}."} for a in range(8) for b in range(6)
]


def lora_model(tiny_llama):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():  # PEFT starts lora_B at zero: give every example a gradient in A too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model.train()


def token_rows(n: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Rows of different lengths; the first half of each is the prompt (label -100)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 6 + (i * 3) % 7
        ids = torch.randint(5, 500, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2 :]})
    return rows


def settings(noise: float, clip: float, batch: int, accumulation: int = 1, rows: int = 100):
    from lmtune.config.privacy import PrivacyConfig

    section = PrivacyConfig(noise_multiplier=noise, max_grad_norm=clip, accountant="rdp")
    return resolve_privacy(section, rows, batch, accumulation, epochs=1, max_steps=-1)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_each_examples_gradient_is_clipped_to_max_grad_norm(tiny_llama):
    model = lora_model(tiny_llama)
    hooks = per_example_hooks(model)
    privacy = settings(noise=0.0, clip=1e-3, batch=6)
    dp = private_optimizer(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0), privacy, 0)
    batch = PadCollator(PAD)(token_rows(6))
    per_example_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                     batch["labels"]).sum().backward()  # fmt: skip
    samples = [p.grad_sample for p in dp.params]  # the hooks' per-example gradients, (6, *shape) each
    norms = torch.stack([g.reshape(6, -1).norm(dim=1) for g in samples], dim=1).norm(dim=1)
    assert samples[0].shape[0] == 6 and bool((norms > 10 * privacy.max_grad_norm).all())  # all would be clipped
    factor = (privacy.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    clipped = [torch.einsum("i,i...->i...", factor, g) for g in samples]
    clipped_norms = torch.stack([c.reshape(6, -1).norm(dim=1) for c in clipped], dim=1).norm(dim=1)
    assert bool((clipped_norms <= privacy.max_grad_norm * (1 + 1e-5)).all())
    dp.clip_and_accumulate()  # what DPOptimizer.step does first: the sum Opacus noises is the sum of the clipped
    for p, c in zip(dp.params, clipped, strict=True):
        torch.testing.assert_close(p.summed_grad, c.sum(dim=0), rtol=1e-5, atol=1e-9)
    hooks.remove_hooks()


def test_without_noise_and_clipping_a_private_step_is_the_plain_step(tiny_llama, tmp_path):
    """Noise 0, a clip bound far above the norms: the private update (in physical chunks) is plain SGD's."""
    from transformers import Trainer, TrainingArguments

    rows = token_rows(5)
    model = lora_model(tiny_llama)
    before = trainable(model)
    # the plain step: the mean over examples of each example's mean answer-token loss
    batch = PadCollator(PAD)(rows)
    loss = per_example_loss(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits, batch["labels"])
    loss.mean().backward()
    with torch.no_grad():
        plain = {n: before[n] - 0.5 * p.grad for n, p in model.named_parameters() if p.requires_grad}
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(before[n])
                p.grad = None

    privacy = settings(noise=0.0, clip=1e6, batch=2, accumulation=1, rows=5)
    privacy.expected_batch = 5  # the one logical batch of this test, run as chunks of 2, 2 and 1
    hooks = per_example_hooks(model)
    args = TrainingArguments(str(tmp_path), use_cpu=True, learning_rate=0.5, optim="sgd", max_grad_norm=0.0,
                             lr_scheduler_type="constant", report_to="none", bf16=False)  # fmt: skip
    cls = private_trainer_class(Trainer, privacy, PadCollator(PAD), sampler=None, seed=0)
    trainer = cls(model=model, args=args, train_dataset=rows)
    trainer.create_optimizer()
    trainer.training_step(model, {"examples": rows})
    trainer.optimizer.step()
    hooks.remove_hooks()
    for name, value in trainable(model).items():
        torch.testing.assert_close(value, plain[name], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(trainable(model)[n], before[n]) for n in before)


def test_an_empty_poisson_batch_still_takes_a_noised_step(tiny_llama, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = lora_model(tiny_llama)
    before = trainable(model)
    privacy = settings(noise=1.0, clip=1.0, batch=4)
    hooks = per_example_hooks(model)
    args = TrainingArguments(str(tmp_path), use_cpu=True, learning_rate=0.1, optim="sgd", max_grad_norm=0.0,
                             report_to="none", bf16=False)  # fmt: skip
    trainer = private_trainer_class(Trainer, privacy, PadCollator(PAD), None, 0)(model=model, args=args,
                                                                                   train_dataset=[])  # fmt: skip
    trainer.create_optimizer()
    assert float(trainer.training_step(model, {"examples": []})) == 0.0
    trainer.optimizer.step()
    hooks.remove_hooks()
    assert all(not torch.equal(v, before[n]) for n, v in trainable(model).items())  # noise moved every weight
    assert len(privacy.accountant) == 1  # and the step counts against epsilon


def test_default_delta_is_one_over_n_rounded_down_to_a_power_of_ten():
    assert default_delta(1000) == pytest.approx(1e-3)
    assert default_delta(534) == pytest.approx(1e-3)
    assert default_delta(99) == pytest.approx(1e-2)


# --------------------------------------------------------------------------- whole runs


def private_raw(tiny_llama_dir: Path, root: Path, **privacy) -> dict:
    train = write_jsonl(root / "train.jsonl", ROWS_48)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, root / "run")
    raw["training"].update(packing=False, max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4,
                           gradient_accumulation_steps=2, learning_rate=2e-2, logging_steps=2)  # fmt: skip
    raw["eval"].update(reference=None, metrics=["perplexity"])
    raw["privacy"] = {"accountant": "rdp", "max_grad_norm": 1.0, **privacy}
    return raw


@pytest.fixture(scope="module")
def private_run(tmp_path_factory, tiny_llama_dir) -> Path:
    from lmtune.pipeline import finetune

    root = tmp_path_factory.mktemp("private")
    finetune(validate_config(private_raw(tiny_llama_dir, root, noise_multiplier=0.3)), echo=lambda *_: None)
    return root / "run"


def test_the_epsilon_reported_is_opacus_accountants_for_the_same_run(private_run):
    from opacus.accountants import RDPAccountant

    metrics = json.loads((private_run / "metrics.json").read_text())
    p = metrics["privacy"]
    assert p["steps"] == metrics["run"]["steps"] == 12  # 48 rows / expected batch 8 = 6 steps a epoch, 2 epochs
    assert p["sample_rate"] == pytest.approx(8 / 48) and p["delta"] == pytest.approx(1e-2)
    reference = RDPAccountant()
    reference.history = [(0.3, 8 / 48, 12)]
    assert p["epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-2), rel=1e-9)
    logged = [json.loads(line) for line in (private_run / "train_log.jsonl").read_text().splitlines()]
    epsilons = [row["epsilon"] for row in logged if "loss" in row]
    assert len(epsilons) == 6 and epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(p["epsilon"])
    assert "ε" in (private_run / "report.md").read_text()


def test_private_lora_learns_the_adapters_change_and_held_out_loss_falls(private_run, tiny_llama_dir):
    """Opacus issue #820: LoRA updates silently lost with some PEFT versions. Here they must land."""
    from safetensors.torch import load_file

    metrics = json.loads((private_run / "metrics.json").read_text())
    assert metrics["finetuned"]["perplexity"] < 0.97 * metrics["base"]["perplexity"]
    weights = load_file(private_run / "adapter_model.safetensors")
    b = [v for k, v in weights.items() if "lora_B" in k]
    assert b and all(float(v.abs().max()) > 1e-4 for v in b)  # PEFT initialises lora_B at zero


def test_a_target_epsilon_is_reached_and_not_exceeded(tmp_path, tiny_llama_dir):
    from lmtune.pipeline import finetune

    raw = private_raw(tiny_llama_dir, tmp_path, target_epsilon=3.0)
    raw["training"].update(max_steps=3, num_train_epochs=1)
    metrics = finetune(validate_config(raw), echo=lambda *_: None)
    assert 2.9 <= metrics["privacy"]["epsilon"] <= 3.0 + 1e-6
    assert metrics["privacy"]["noise_multiplier"] > 0


def test_an_interrupted_private_run_resumes_with_the_accountants_state(tmp_path, tiny_llama_dir):
    from transformers import TrainerCallback

    import lmtune.pipeline as pipeline
    from lmtune.guards import Interrupted

    raw = private_raw(tiny_llama_dir, tmp_path, noise_multiplier=0.5)
    raw["training"].update(save_strategy="steps", save_steps=2, num_train_epochs=1)

    class CtrlCAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        pipeline.finetune(validate_config(raw), echo=lambda *_: None, callbacks=[CtrlCAtStep3()])
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "privacy_state.json").read_text())
    assert sum(h[2] for h in state["accountant"]["history"]) == 3
    metrics = pipeline.finetune(validate_config(raw), resume=True, echo=lambda *_: None)
    assert metrics["run"]["resumed_from"] == "checkpoint-3" and metrics["privacy"]["steps"] == 6


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.packing=true", "training.packing: packing mixes examples"),
        ("method=full", "method: full: private training uses lora, qlora"),
        ("method=dora", "method: dora: private training uses lora, qlora"),
        ("privacy.noise_multiplier=null", "privacy: give exactly one of target_epsilon and noise_multiplier"),
    ],
)
def test_what_breaks_per_example_gradients_is_refused_in_one_line(tmp_path, tiny_llama_dir, override, message):
    raw = private_raw(tiny_llama_dir, tmp_path, noise_multiplier=0.5)
    config = tmp_path / "private.yaml"
    config.write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-m", "lmtune", "train", str(config), "--set", override],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_a_private_run_is_refused_on_several_processes(tmp_path, tiny_llama_dir):
    config = tmp_path / "private.yaml"
    config.write_text(json.dumps(private_raw(tiny_llama_dir, tmp_path, noise_multiplier=0.5)))
    done = subprocess.run([sys.executable, "-m", "lmtune", "train", str(config), "--nproc", "2"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "privacy: runs in one process" in done.stderr
    assert not (tmp_path / "run").exists()
