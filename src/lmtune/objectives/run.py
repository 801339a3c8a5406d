"""``lmtune train`` with ``objective:`` dpo / kto / orpo / simpo / reward / grpo.

data -> model -> base evaluation -> method -> TRL trainer -> save -> tuned evaluation -> report,
the same stages and run-folder files as the sft pipeline (``lmtune.pipeline``), with the
objective's own measures next to the usual ones: held-out preference accuracy and margin,
KL from the reference, reward-function means (GRPO), a reward model's pairwise accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.prepare import TaskData, load_task_data
from lmtune.errors import ConfigError
from lmtune.evaluate import preference as P
from lmtune.evaluate.generate import generate
from lmtune.evaluate.reward import load_reward_model
from lmtune.evaluate.run import evaluate_model
from lmtune.methods import apply_method, count_parameters, settings
from lmtune.models import load_model, training_dtype
from lmtune.objectives.rewards import import_function
from lmtune.objectives.trainers import TRAINERS
from lmtune.provenance import run_record
from lmtune.run_folder import prepare_run_folder, resume_point

logger = logging.getLogger(__name__)


def finetune_objective(cfg: RunConfig, overwrite: bool = False, resume: bool = False, echo: Any = print) -> dict:
    """Train ``cfg.objective`` with its TRL trainer; returns the contents of ``metrics.json``."""
    from transformers import set_seed

    from lmtune.pipeline import add_rewards, finish_run, save_weights, write_run_inputs
    from lmtune.preflight import check_device

    if resume:
        raise ConfigError(f"--resume: objective {cfg.objective} runs start again (use --overwrite)")
    out = Path(cfg.training.output_dir)
    check_device(cfg)
    data = load_task_data(cfg.data, cfg.seed)
    train_examples, held_out = examples_for(cfg, data)
    for ref in cfg.eval.checks:  # a typo fails now, not after training
        import_function(ref, "eval.checks")
    record = run_record(cfg)
    resume_point(out, record, overwrite, resume=False)  # refuses an occupied folder before anything loads
    judge = load_reward_model(cfg.eval.reward_model) if cfg.eval.reward_model else None
    set_seed(cfg.seed)
    dtype = training_dtype(cfg.model.dtype, trains_base_weights=cfg.method in ("full", "freeze"))
    model, tokenizer, base = load_policy(cfg, dtype)
    d = cfg.data
    encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
    prepare_run_folder(out, overwrite)
    write_run_inputs(out, cfg, record, data)
    echo(f"data: {len(train_examples)} train / {len(held_out)} held-out rows ({data.shape}), objective {cfg.objective}")

    metrics: dict[str, Any] = {"objective": cfg.objective}
    predictions: dict[str, list[dict[str, Any]]] = {}
    if cfg.eval.base:
        echo("evaluating the base model ...")
        metrics["base"], predictions["base"] = evaluate_objective(model, tokenizer, encoder, held_out, cfg)

    model = attach_method(model, cfg, base)
    trainable, total = count_parameters(model)
    echo(f"method: {cfg.method}, trainable params: {trainable:,} / {total:,} ({100 * trainable / total:.2f}%)")
    train_ds, eval_ds = trl_datasets(cfg, train_examples, held_out)
    trainer = TRAINERS[cfg.objective](model, tokenizer, train_ds, eval_ds, cfg, [log_callback(out)])
    echo(f"training ({cfg.objective} on TRL) ...")
    result = trainer.train()
    if cfg.objective == "reward" and hasattr(model, "merge_and_unload"):
        save_reward_model(model, tokenizer, out)
    else:
        save_weights(trainer, tokenizer, out)

    echo("evaluating the fine-tuned model ...")
    metrics["finetuned"], predictions["finetuned"] = evaluate_objective(model, tokenizer, encoder, held_out, cfg, True)
    if judge:
        echo(f"scoring answers with the reward model {cfg.eval.reward_model} ...")
        add_rewards(judge, metrics, predictions, cfg)
    metrics["train_time_s"] = result.metrics.get("train_runtime")
    metrics["run"] = {
        "model": cfg.model.name, "base_weights": base, "objective": cfg.objective, "method": cfg.method,
        "objective_settings": getattr(cfg, cfg.objective).model_dump(), "method_settings": settings(cfg),
        "trainable_params": trainable, "total_params": total, "trainable_percent": 100 * trainable / total,
        "dtype": dtype, "train_examples": len(train_examples), "eval_examples": len(held_out),
        "eval_source": data.eval_source, "train_loss": result.training_loss, "versions": record["versions"],
    }  # fmt: skip
    return finish_run(out, cfg, metrics, predictions, judge is not None, echo)


def save_reward_model(model: Any, tokenizer: Any, out: Path) -> None:
    """A reward model is used as a whole (``eval.reward_model``, ``AutoModelForSequenceClassification``):
    its LoRA update and trained score head are merged into a plain model folder."""
    import copy

    from lmtune.pipeline import save_into

    merged = copy.deepcopy(model).merge_and_unload(safe_merge=True)
    save_into(out, lambda staging: (merged.save_pretrained(staging), tokenizer.save_pretrained(staging)))


def examples_for(cfg: RunConfig, data: TaskData) -> tuple[list[Example], list[Example]]:
    """The train and held-out examples in the shape ``cfg.objective`` learns from (KTO: pairs unpaired)."""
    from lmtune.data.preference import to_unpaired
    from lmtune.preflight import check_data_fits

    check_data_fits(cfg, data)
    if cfg.objective == "kto":
        return to_unpaired(data.train), data.eval
    return data.train, data.eval


def load_policy(cfg: RunConfig, dtype: str) -> tuple[Any, Any, str]:
    """The model to tune: a causal LM, or for ``reward`` the same weights with a one-score head."""
    model_cfg = cfg.model.model_copy(update={"dtype": dtype})
    model, tokenizer, base = load_model(model_cfg)
    if cfg.objective != "reward":
        return model, tokenizer, base
    import torch
    from transformers import AutoModelForSequenceClassification

    scorer = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=getattr(torch, dtype))
    scorer.config.pad_token_id = tokenizer.pad_token_id
    return scorer, tokenizer, base


def attach_method(model: Any, cfg: RunConfig, base: str) -> Any:
    if cfg.objective != "reward" or cfg.method == "full":
        from lmtune.methods import MethodContext

        return apply_method(model, cfg, MethodContext(base_path=base))
    from peft import get_peft_model

    from lmtune.methods.lora import lora_config

    config = lora_config(cfg, use_dora=cfg.method == "dora")
    config.task_type = "SEQ_CLS"  # PEFT then trains the new score head in full (modules_to_save)
    return get_peft_model(model, config)


def trl_datasets(cfg: RunConfig, train: list[Example], held_out: list[Example]) -> tuple[Any, Any]:
    from datasets import Dataset

    from lmtune.data.preference import to_unpaired, trl_rows

    train_ds = Dataset.from_list(trl_rows(train, cfg.objective))
    if cfg.training.eval_strategy == "no":
        return train_ds, None
    held = to_unpaired(held_out) if cfg.objective == "kto" and held_out and held_out[0].rejected else held_out
    return train_ds, Dataset.from_list(trl_rows(held, cfg.objective))


def evaluate_objective(
    model: Any, tokenizer: Any, encoder: Encoder, held_out: list[Example], cfg: RunConfig, tuned: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The objective's measures on held-out rows, plus generation metrics where the rows have answers."""
    e = cfg.eval
    if cfg.objective == "reward":
        pairs = [ex for ex in held_out if ex.rejected is not None]
        return {"reward_pairs": P.reward_pair_metrics(model, tokenizer, pairs, e.batch_size)}, []
    result: dict[str, Any] = {}
    pairs = [ex for ex in held_out if ex.rejected is not None]
    if pairs:
        reference = P.reference_context(model) if tuned and hasattr(model, "disable_adapter") else None
        beta = getattr(getattr(cfg, cfg.objective), "beta", None)
        result["preference"] = P.preference_metrics(model, encoder, pairs, e.batch_size, reference, beta)
    if cfg.objective == "grpo":
        result["rewards"], predictions = grpo_rewards(model, tokenizer, encoder, held_out, cfg)
    else:
        answered = [ex for ex in held_out if ex.references and ex.label is not False]  # not KTO's undesirable
        wanted = [m for m in e.metrics if m != "perplexity"]
        scores, predictions = evaluate_model(model, tokenizer, encoder, answered, wanted, e.max_samples,
                                             e.max_new_tokens, e.batch_size)  # fmt: skip
        result.update(scores)
    if e.checks and predictions:
        result["checks"] = answer_checks(e.checks, predictions, held_out)
    if tuned and hasattr(model, "disable_adapter") and predictions:
        shown = [ex for ex in held_out if ex.prompt in {p["prompt"] for p in predictions}][: len(predictions)]
        answers = [p["prediction"] for p in predictions][: len(shown)]
        result["kl_from_reference"] = P.sequence_kl(model, encoder, shown, answers, P.reference_context(model),
                                                    e.batch_size)  # fmt: skip
    return result, predictions


def answer_checks(checks: list[str], predictions: list[dict[str, Any]], held_out: list[Example]) -> dict[str, float]:
    """The mean of each ``eval.checks`` function over the generated answers."""
    from lmtune.objectives.rewards import import_function

    by_prompt = {ex.prompt: ex for ex in held_out}
    prompts = [by_prompt[p["prompt"]].prompt if p["prompt"] in by_prompt else p["prompt"] for p in predictions]
    completions = [[{"role": "assistant", "content": p["prediction"]}] for p in predictions]
    out = {}
    for ref in checks:
        scores = import_function(ref, "eval.checks")(prompts=prompts, completions=completions)
        out[ref.rsplit(":", 1)[-1]] = sum(scores) / max(len(scores), 1)
    return out


def grpo_rewards(
    model: Any, tokenizer: Any, encoder: Encoder, held_out: list[Example], cfg: RunConfig
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Each reward function's mean on greedy answers to the held-out prompts."""
    from lmtune.objectives.rewards import reward_functions

    rows = held_out[: cfg.eval.max_samples]
    answers = generate(model, tokenizer, [encoder.question_ids(ex.prompt) for ex in rows],
                       cfg.grpo.max_completion_length, cfg.eval.batch_size)  # fmt: skip
    completions = [[{"role": "assistant", "content": a.text}] for a in answers]
    columns: dict[str, list[Any]] = {}
    for ex in rows:
        for k, v in ex.extras.items():
            columns.setdefault(k, []).append(v)
    means = {}
    for name, fn in zip(cfg.grpo.reward_functions, reward_functions(cfg.grpo), strict=True):
        scores = fn(prompts=[ex.prompt for ex in rows], completions=completions, **columns)
        means[name] = sum(scores) / max(len(scores), 1)
    predictions = [
        {"prompt": ex.prompt, "reference": ex.references[0] if ex.references else "", "prediction": a.text,
         "stopped": a.stopped, "task": ex.task}
        for ex, a in zip(rows, answers, strict=True)
    ]  # fmt: skip
    return means, predictions


def log_callback(out: Path) -> Any:
    from transformers import TrainerCallback

    from lmtune.train import TRAIN_LOG, write_log_line

    class JsonlLog(TrainerCallback):
        """TRL's logged dicts (loss, rewards/*, logps/*, kl) as JSON lines in the run folder."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                write_log_line(out / TRAIN_LOG, state, logs)

    return JsonlLog()
