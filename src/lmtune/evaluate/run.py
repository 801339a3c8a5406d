"""One evaluation pass: perplexity on all held-out rows, generation metrics on a sample."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.evaluate import metrics as M
from lmtune.evaluate.generate import generate
from lmtune.evaluate.perplexity import aggregate, perplexity


def evaluate_model(
    model: Any,
    tokenizer: Any,
    encoder: Encoder,
    examples: list[Example],
    metrics: Sequence[str] = ("perplexity", "bleu", "rouge"),
    max_samples: int | None = 200,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    encoded: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (metrics ``M``, predictions) for one model on held-out examples.

    ``M`` holds ``perplexity`` and, when asked for and the data has prompts,
    ``bleu`` / ``rouge`` on greedy answers to the first ``max_samples`` examples.
    When the examples come from several tasks, ``M["by_task"]`` holds an ``M`` per task.
    """
    start = time.perf_counter()
    nll: list[tuple[float, int]] = []
    if "perplexity" in metrics:
        if encoded is None:  # rows tokenised already (the pipeline's cache) are used as given
            encoded = [encoder.encode(e) for e in examples]
        nll = perplexity(model, encoded, tokenizer.pad_token_id, batch_size=batch_size)["per_example"]
    wants_text = [m for m in ("bleu", "rouge") if m in metrics]
    answerable = [i for i, e in enumerate(examples) if e.text is None]
    sample = _sample(examples, answerable, max_samples) if wants_text else []
    outs = generate(model, tokenizer, [encoder.prompt_ids(examples[i]) for i in sample], max_new_tokens, batch_size)
    generated = dict(zip(sample, outs, strict=True))

    result = _score(examples, range(len(examples)), nll, generated, metrics, max_new_tokens)
    tasks = sorted({e.task for e in examples})
    if len(tasks) > 1:
        result["by_task"] = {
            t: _score(
                examples, [i for i, e in enumerate(examples) if e.task == t], nll, generated, metrics, max_new_tokens
            )
            for t in tasks
        }
    result["eval_time_s"] = time.perf_counter() - start
    predictions = [
        {
            "prompt": examples[i].prompt,
            "reference": _reference(examples[i]),
            "prediction": g.text,
            "stopped": g.stopped,
            "task": examples[i].task,
        }
        for i, g in generated.items()
    ]
    return result, predictions


def _sample(examples: list[Example], answerable: list[int], max_samples: int | None) -> list[int]:
    """The first ``max_samples`` answerable rows, taken evenly across tasks so each task is scored."""
    if not max_samples or len(answerable) <= max_samples:
        return answerable
    by_task: dict[str, list[int]] = {}
    for i in answerable:
        by_task.setdefault(examples[i].task, []).append(i)
    queues = list(by_task.values())
    chosen: list[int] = []
    while len(chosen) < max_samples:
        for q in queues:
            if q and len(chosen) < max_samples:
                chosen.append(q.pop(0))
    return sorted(chosen)


def _reference(ex: Example) -> str | list[str]:
    return ex.references[0] if len(ex.references) == 1 else list(ex.references)


def _score(
    examples: list[Example],
    index: Sequence[int],
    nll: list[tuple[float, int]],
    generated: dict[int, Any],
    metrics: Sequence[str],
    max_new_tokens: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if nll:
        agg = aggregate([nll[i] for i in index])
        result["perplexity"] = agg["perplexity"]
        result["perplexity_detail"] = {"nll": agg["nll"], "tokens": agg["tokens"], "examples": len(index)}
    gen = [i for i in index if i in generated]
    if gen:
        hyps = [generated[i].text for i in gen]
        refs = [list(examples[i].references) for i in gen]
        if "bleu" in metrics:
            result["bleu"] = M.bleu(hyps, refs)
        if "rouge" in metrics:
            result["rouge"] = M.rouge(hyps, refs)
        outs = [generated[i] for i in gen]
        result["generation"] = {
            "samples": len(outs),
            "stopped_at_eos": sum(o.stopped for o in outs) / len(outs),
            "mean_new_tokens": sum(o.new_tokens for o in outs) / len(outs),
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
        }
    return result


def metric_settings() -> dict[str, Any]:
    """How each metric was computed, written next to the numbers."""
    return {
        "perplexity": "exp(sum NLL / sum scored tokens) over answer tokens (all tokens for text data)",
        "bleu": M.BLEU_SETTINGS,
        "rouge": M.ROUGE_SETTINGS,
    }
