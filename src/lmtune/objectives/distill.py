"""``objective: distill`` — a smaller student of the model, pruned in depth, then taught by it.

The loaded model (``model.name``: a model, or a run folder whose adapter is merged) is the teacher.  The
student is the teacher without whole decoder layers (``lmtune.compress``: the ones that change their input
least on the task's own training rows), trained on TRL's ``GKDTrainer`` (generalized knowledge distillation,
Agarwal et al. 2024) to match the teacher's next-token distributions on the task's answers, mixed with the
usual answer loss; ``distill.on_policy`` trains that share of steps on the student's own sampled answers.

The run's rows are the teacher (``base``: every comparison of the run is against it), the pruned student
before distillation (``pruned``) and the distilled student (``finetuned``); the teacher's and the student's
generation speed is timed in turns once training ended (``lmtune.evaluate.latency``).
"""

from __future__ import annotations

from typing import Any

from lmtune.compress import pruned_copy
from lmtune.config import RunConfig
from lmtune.data.collate import PadCollator, left_pad
from lmtune.data.encode import IGNORE
from lmtune.evaluate.latency import generation_speed, weight_bytes
from lmtune.launch import ranks
from lmtune.methods import count_parameters
from lmtune.objectives import on_trl, sft
from lmtune.objectives.spec import Built, Objective, Task
from lmtune.train import guarded

# lmtune's own training step (packing, chunked / fused loss, plan) is sft's: GKDTrainer computes both models'
# logits itself.  Replay / EWC and DP-SGD are wired into the supervised step only; the distillation loss is on
# the answers, so a prompt-trained run has nothing to ask for.  The held-out measures are sft's (eval.stride too).
UNUSED = tuple(key for key in on_trl.UNUSED_ON_TRL if key != "eval.stride")
LEVER_NOTE = (
    "speed levers and plan: objective distill trains on TRL's GKDTrainer step; lmtune's plan, packing, chunked "
    "loss and fused norm / dropout are for objective sft"
)


def derive(teacher: Any, tokenizer: Any, task: Task, cfg: RunConfig, echo: Any) -> Any:
    """The student: the teacher (its adapter merged, frozen) without the least important layers."""
    if hasattr(teacher, "merge_and_unload"):
        teacher = teacher.merge_and_unload()
    teacher.eval().requires_grad_(False)
    rows = task.train[: cfg.distill.score_rows]
    student, facts = pruned_copy(teacher, rows, tokenizer.pad_token_id, cfg.distill.drop_layers)
    student.requires_grad_(True)
    task.extra.update(teacher=teacher, pruning=facts)
    task.lines.append(f"pruning: {facts['layers']} -> {facts['kept']} layers, dropped {facts['dropped']} "
                      f"({facts['chosen']}; scored on {facts['scored_rows']} training rows)")  # fmt: skip
    return student


class DistillCollator(PadCollator):
    """lmtune's padded rows plus what GKDTrainer's on-policy steps generate from: the prompts (everything before
    the first answer token), left-padded."""

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        batch = super().__call__(features)
        prompts = [f["input_ids"][: _answer_start(f["labels"])] for f in features]
        left = left_pad(prompts, self.pad_token_id)
        return {**batch, "prompts": left["input_ids"], "prompt_attention_mask": left["attention_mask"]}


def _answer_start(labels: list[int]) -> int:
    return next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))


def trainer(model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list, echo: Any) -> Built:
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # lmtune names the experimental trainer in its docs
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    d = cfg.distill
    # GKDConfig's temperature is its on-policy sampling temperature: the student samples its own answers at 1;
    # distill.temperature softens the distillation loss only (compute_loss below)
    args = on_trl.trl_config(
        GKDConfig, cfg, temperature=1.0, beta=d.beta, lmbda=d.on_policy, max_new_tokens=d.max_new_tokens,
        seq_kd=False, disable_dropout=True, max_length=None,
    )  # fmt: skip
    trained = guarded(_with_answer_loss(GKDTrainer, d.answer_weight, d.temperature), cfg.training.save_total_limit)(
        model=model, teacher_model=task.extra["teacher"], args=args, train_dataset=Dataset.from_list(task.train),
        eval_dataset=Dataset.from_list(task.eval) if args.eval_strategy != "no" else None, processing_class=tokenizer,
        data_collator=DistillCollator(tokenizer.pad_token_id), callbacks=callbacks,
    )  # fmt: skip

    def finish() -> dict[str, Any]:
        if not ranks.is_main():  # rank 0 alone evaluates and reports; the others would only slow its timing
            return {}
        return {"distill": {**task.extra["pruning"], **_sizes_and_speed(model, tokenizer, task, cfg)}}

    return Built(trained, finish=finish)


def _with_answer_loss(gkd: type, answer_weight: float, temperature: float) -> type:
    """GKDTrainer with the loss the distillation literature uses, written here because GKDTrainer's own
    ``compute_loss`` neither applies the temperature to the divergence (only to sampling) nor mixes in the answer
    loss: ``answer_weight`` x cross-entropy + (1 - answer_weight) x T^2 x divergence at temperature T (TRL's
    ``generalized_jsd_loss``), both over the answer tokens.  Both parts are logged (``distill_loss``,
    ``answer_loss``)."""
    import torch

    class Distiller(gkd):
        parts: dict[str, list[float]]

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:  # fmt: skip
            student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            self.teacher_model.eval()
            with torch.no_grad():
                teacher = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            labels = inputs["labels"][:, 1:]
            logits = student.logits[:, :-1, :]
            divergence = self.generalized_jsd_loss(
                logits, teacher.logits[:, :-1, :], labels=labels, beta=self.beta, temperature=temperature,
                num_items_in_batch=num_items_in_batch,
            )  # fmt: skip
            answers = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                        ignore_index=IGNORE, reduction="sum")  # fmt: skip
            answers = answers / (num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE).sum())
            loss = answer_weight * answers + (1 - answer_weight) * temperature**2 * divergence
            mode = "train" if model.training else "eval"
            self.parts = getattr(self, "parts", {})
            self.parts.setdefault(f"{mode}:distill_loss", []).append(float(divergence.detach()))
            self.parts.setdefault(f"{mode}:answer_loss", []).append(float(answers.detach()))
            return (loss, student) if return_outputs else loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            prefix = "eval_" if mode == "eval" else ""
            for key, values in list(getattr(self, "parts", {}).items()):
                if key.startswith(mode + ":") and values:
                    logs[prefix + key.split(":", 1)[1]] = sum(values) / len(values)
                    values.clear()
            super().log(logs, *args, **kwargs)

    return Distiller


def _sizes_and_speed(student: Any, tokenizer: Any, task: Task, cfg: RunConfig) -> dict[str, Any]:
    """Parameters, weight bytes, and greedy generation speed of teacher and student, timed in turns."""
    d = cfg.distill
    encoder = task.extra["encoder"]
    prompts = [encoder.prompt_ids(ex) for ex in task.held_out[: d.speed_prompts]]
    models = {"teacher": task.extra["teacher"], "student": student}
    speed = generation_speed(models, prompts, tokenizer.pad_token_id, d.speed_new_tokens, d.speed_repeats)
    out = {name: {"params": count_parameters(m)[1], "weight_bytes": weight_bytes(m), **speed[name]}
           for name, m in models.items()}  # fmt: skip
    out["speedup"] = out["student"]["tokens_per_s"] / out["teacher"]["tokens_per_s"]
    out["speed_settings"] = {"prompts": len(prompts), "new_tokens": d.speed_new_tokens, "greedy": True,
                             "repeats": d.speed_repeats, "statistic": "median"}  # fmt: skip
    return out


OBJECTIVE = Objective(
    name="distill", prepare=sft.prepare, trainer=trainer, measures=sft.measures, unused=UNUSED, derive=derive,
    derived_row="pruned", settings=lambda cfg: cfg.distill.model_dump(), lever_note=LEVER_NOTE,
)  # fmt: skip
