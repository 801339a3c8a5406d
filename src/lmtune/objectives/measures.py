"""The held-out measures of the objectives trained on TRL: preference accuracy and margin, generation
metrics, ``eval.checks``, GRPO's reward functions, and the KL of the tuned policy from its reference."""

from __future__ import annotations

from typing import Any

from lmtune.config import RunConfig
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.evaluate import preference as P
from lmtune.evaluate.generate import generate
from lmtune.evaluate.run import evaluate_model
from lmtune.objectives.rewards import import_function, reward_functions
from lmtune.objectives.spec import Task


def measures(
    model: Any, tokenizer: Any, encoder: Encoder, task: Task, cfg: RunConfig, tuned: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Held-out preference accuracy and margin (where the rows are pairs), generation metrics where they have
    answers (GRPO: the reward functions' means), ``eval.checks``, and the KL from the reference once tuned."""
    e = cfg.eval
    held_out = task.held_out
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
