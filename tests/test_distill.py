"""objective distill: a depth-pruned student of a model, taught by it on TRL's GKD trainer, measured against it:
three rows (teacher, pruned, distilled), layer scores, sizes and speeds, a student that loads and exports like
any model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import llamacpp
import pytest
import torch
from helpers import EVAL_ROWS, TRAIN_ROWS, tiny_llama_config, tiny_run_raw, write_jsonl

from lmtune.cli import main
from lmtune.compress import choose_layers
from lmtune.config import validate_config
from lmtune.pipeline import finetune


def save_teacher(folder: Path, tokenizer: Any, layers: int = 4, init: float = 0.02) -> Path:
    """A tiny random Llama; a wider ``init`` gives sharper next-token distributions to learn from."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer, num_hidden_layers=layers, initializer_range=init)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


def distill_raw(teacher: Path, root: Path, out: str = "run", **distill: Any) -> dict[str, Any]:
    train = write_jsonl(root / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(teacher, train, held_out, root / out, method="full")
    raw["objective"] = "distill"
    raw["distill"] = {"speed_prompts": 2, "speed_new_tokens": 4, **distill}
    raw["training"].update(max_steps=4)
    return raw


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A finished distill run: a 4-layer teacher, its 2-layer student; do not write into it."""
    root = tmp_path_factory.mktemp("distill")
    raw = distill_raw(save_teacher(root / "teacher", tokenizer), root, drop_layers=2)
    finetune(validate_config(raw), echo=lambda *_: None)
    return root / "run"


def test_the_run_measures_teacher_pruned_and_distilled_on_the_same_rows(distill_run: Path) -> None:
    from lmtune.report import text_table

    m = json.loads((distill_run / "metrics.json").read_text())
    assert m["objective"] == "distill"
    for row in ("base", "pruned", "finetuned"):
        assert m[row]["perplexity"] > 0 and m[row]["generation"]["samples"] == 4
        assert len((distill_run / f"predictions_{row}.jsonl").read_text().splitlines()) == 4
    d = m["distill"]
    assert (d["layers"], d["kept"], len(d["scores"])) == (4, 2, 4)
    assert d["dropped"] == choose_layers(d["scores"], 2) == [1, 2]  # the first and last layer always stay
    for size in ("params", "weight_bytes"):
        assert d["student"][size] < d["teacher"][size]
    assert d["speedup"] == pytest.approx(d["student"]["tokens_per_s"] / d["teacher"]["tokens_per_s"])
    assert all(d[name]["ttft_s"] > 0 for name in ("teacher", "student"))
    f = m["forgetting"]
    assert f["pruned_perplexity"] > 0 and f["perplexity_increase_percent"] == pytest.approx(
        100 * (f["finetuned_perplexity"] / f["base_perplexity"] - 1)
    )
    table = text_table(m)
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["teacher", "pruned", "distilled"]
    assert "smaller and faster" in table and "layer scores: 0:" in table
    for report in ("report.md", "report.html"):
        text = (distill_run / report).read_text()
        assert "Smaller and faster" in text and "distilled" in text and "First token (ms)" in text


def test_the_student_loads_with_plain_transformers_with_its_new_layer_count(distill_run: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(distill_run).eval()
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    ids = torch.tensor([tokenizer("Add 2 and 3.")["input_ids"]])
    with torch.no_grad():
        cached = student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
        assert torch.equal(cached, student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False))


def test_the_student_exports_to_hf_and_gguf(distill_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM
    from transformers.integrations.gguf.reader import read_gguf_metadata

    for fmt in ("hf", "gguf"):
        out = tmp_path / fmt
        proc = subprocess.run([sys.executable, "-m", "lmtune", "export", str(distill_run), "--output", str(out),
                               "--format", fmt], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert student.config.num_hidden_layers == 2
    gguf_file = next((tmp_path / "gguf").glob("*.gguf"))
    assert read_gguf_metadata(str(gguf_file), ("llama.block_count",))[0]["llama.block_count"] == 2
    if llamacpp.missing() is None:  # the real llama.cpp runs the student: its log-probabilities are transformers'
        ids = [1, 17, 42, 99, 7, 256, 3]
        answer = llamacpp.ask(gguf_file, logprobs=[ids])
        with torch.no_grad():
            expected = llamacpp.log_softmax(student(torch.tensor([ids])).logits[0].float().numpy())
        assert llamacpp.nmse(expected, answer["logprobs"][0]) < 1e-4


def test_a_lora_run_teacher_is_merged_and_the_kept_layers_are_its_own(lora_run: Path, tokenizer) -> None:
    """drop_layers as a list: layer 1 of the 2-layer LoRA run goes; the student's layer 0, embeddings and head are
    the merged teacher's, exactly."""
    from lmtune.models import load_model
    from lmtune.objectives.distill import derive
    from lmtune.objectives.spec import Task

    cfg = validate_config({"model": {"name": str(lora_run)}, "objective": "distill", "method": "full",
                           "distill": {"drop_layers": [1]}, "data": {"train": "x.jsonl"}})  # fmt: skip
    model, _, _ = load_model(cfg.model)
    merged = {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}
    model, _, _ = load_model(cfg.model)
    task = Task(train=[{"input_ids": tokenizer("Add 2 and 3.")["input_ids"]}], eval=None, held_out=[], train_count=1)
    student = derive(model, tokenizer, task, cfg, echo=print)
    assert student.config.num_hidden_layers == 1 and task.extra["pruning"]["dropped"] == [1]
    state = student.state_dict()
    assert set(state) == {k for k in merged if not k.startswith("model.layers.1.")}
    assert all(torch.equal(state[k], merged[k]) for k in state)
    assert not any(p.requires_grad for p in task.extra["teacher"].parameters())
    assert all(p.requires_grad for p in student.parameters())


def test_the_distillation_loss_falls(tmp_path: Path, tokenizer: Any) -> None:
    """Distillation alone (answer_weight 0): the student's divergence from a sharp teacher goes down."""
    raw = distill_raw(save_teacher(tmp_path / "teacher", tokenizer, init=0.5), tmp_path, answer_weight=0.0)
    raw["training"].update(max_steps=12, learning_rate=1e-2)
    raw["eval"].update(base=False, reference=None, metrics=["perplexity"])
    finetune(validate_config(raw), echo=lambda *_: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    kd = [row["distill_loss"] for row in log if "distill_loss" in row]
    assert len(kd) == 12 and all("answer_loss" in row for row in log if "distill_loss" in row)
    assert sum(kd[-3:]) / 3 < 0.7 * sum(kd[:3]) / 3


def test_a_stopped_distill_run_resumes_to_the_same_student(tmp_path: Path, tokenizer: Any) -> None:
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    teacher = save_teacher(tmp_path / "teacher", tokenizer)
    runs = {}
    for name in ("whole", "stopped"):
        raw = distill_raw(teacher, tmp_path, out=name)
        raw["training"].update(max_steps=8, save_strategy="steps", save_steps=2)
        raw["eval"].update(base=False, reference=None, metrics=["perplexity"])
        runs[name] = validate_config(raw)
    finetune(runs["whole"], echo=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        finetune(runs["stopped"], echo=lambda *_: None, callbacks=[StopAt()])
    said: list[str] = []
    finetune(runs["stopped"], echo=said.append, resume=True)
    assert any(line.startswith("resuming from") and "checkpoint-4" in line for line in said)
    whole, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "stopped"))
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6) for k in whole)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "lora"}, "run.yaml: objective distill trains with method full; not lora"),
        ({"distill": {"drop_layers": 3}}, "distill.drop_layers: cannot drop 3 of 4 layers"),
        ({"distill": {"drop_layers": [1, 9]}}, "distill.drop_layers: [1, 9]: the model has 4 layers (0-3)"),
        ({"objective": "sft", "distill": {"temperature": 3.0}}, "distill.temperature: objective sft does not use it"),
    ],
)
def test_a_distill_config_that_cannot_work_is_one_line_and_leaves_nothing(
    change: dict[str, Any], message: str, tmp_path: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    raw = distill_raw(save_teacher(tmp_path / "teacher", tokenizer), tmp_path)
    raw.pop("lora", None)
    raw.update({k: v for k, v in change.items() if k != "distill"})
    if change.get("objective") == "sft":
        raw["distill"] = change["distill"]
    else:
        raw["distill"].update(change.get("distill", {}))
    if raw["method"] == "lora":
        raw["lora"] = {"r": 4}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    capsys.readouterr()
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_on_policy_steps_learn_from_the_students_own_answers(tmp_path: Path, tokenizer: Any) -> None:
    """distill.on_policy 1: every step distils on answers the student sampled (TRL's GKD ``lmbda``), which need the
    prompts the collator hands over, left-padded."""
    raw = distill_raw(save_teacher(tmp_path / "teacher", tokenizer, init=0.5), tmp_path, on_policy=1.0,
                      max_new_tokens=6, answer_weight=0.0)  # fmt: skip
    raw["eval"].update(base=False, reference=None, metrics=["perplexity"])
    metrics = finetune(validate_config(raw), echo=lambda *_: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert metrics["run"]["steps"] == 4 and len([row for row in log if "distill_loss" in row]) == 4
    assert metrics["run"]["objective_settings"]["on_policy"] == 1.0


def test_the_collator_hands_on_policy_steps_the_prompts_left_padded() -> None:
    from lmtune.data.encode import IGNORE
    from lmtune.objectives.distill import DistillCollator

    rows = [{"input_ids": [5, 6, 7, 8], "labels": [IGNORE, IGNORE, 7, 8]}, {"input_ids": [9, 3], "labels": [IGNORE, 3]}]
    batch = DistillCollator(pad_token_id=0)(rows)
    assert batch["prompts"].tolist() == [[5, 6], [0, 9]]
    assert batch["prompt_attention_mask"].tolist() == [[1, 1], [0, 1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 3, 0, 0]]
