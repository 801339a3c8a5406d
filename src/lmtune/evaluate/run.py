"""One evaluation pass: perplexity on all held-out rows, generation metrics on a sample."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.held_out import MIN_PROMPT_TOKENS, cut_middle, fit_held_out
from lmtune.errors import ConfigError
from lmtune.evaluate import metrics as M
from lmtune.evaluate.generate import generate
from lmtune.evaluate.perplexity import aggregate, perplexity, sliding_window_nll

GENERATION_METRICS = ("bleu", "rouge", "chrf", "exact_match", "token_f1", "accuracy", "macro_f1")
LABEL_METRICS = ("accuracy", "macro_f1")


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
    stride: int = 256,
    owner: list[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (metrics ``M``, predictions) for one model on held-out examples.

    ``M`` holds ``perplexity`` and, when asked for and the data has prompts, the generation
    metrics (``bleu``, ``rouge``, ``chrf``, ``exact_match``, ``token_f1``; ``accuracy`` and
    ``macro_f1`` only when the answers are label-like) on greedy answers to the first
    ``max_samples`` examples.  ``text`` examples longer than ``encoder.max_length`` are scored
    whole, with a sliding window of ``encoder.max_length`` tokens moving ``stride`` tokens at a
    time, not by their (truncated) row; a longer prompt/answer row has the middle of its prompt cut
    (`lmtune.data.held_out`).  An example with several references is scored on every
    one of them (``encoded`` row j belongs to example ``owner[j]``; rows and examples are aligned
    when ``owner`` is None).  A generation prompt that leaves no room for ``max_new_tokens`` in the
    model's context is cut from the middle too, counted as ``M["generation"]["prompts_cut"]``.
    When the examples come from several tasks, ``M["by_task"]`` holds an ``M`` per task.
    """
    start = time.perf_counter()
    nll: list[tuple[float, int]] = []
    long_texts: dict[int, dict[str, list[int]]] = {}
    if "perplexity" in metrics:
        long_texts = _long_texts(encoder, examples)
        if encoded is None:  # rows tokenised already (the pipeline's cache) are used as given
            variants = [(i, v) for i, e in enumerate(examples) for v in e.each_reference()]
            owner, encoded = [i for i, _ in variants], [fit_held_out(encoder, v)[0] for _, v in variants]
        owner = list(range(len(encoded))) if owner is None else owner
        rows = [j for j in range(len(encoded)) if owner[j] not in long_texts]
        scored = perplexity(model, [encoded[j] for j in rows], tokenizer.pad_token_id, batch_size=batch_size)
        nll = [(0.0, 0)] * len(examples)
        for j, (n, t) in zip(rows, scored["per_example"], strict=True):
            total, tokens = nll[owner[j]]
            nll[owner[j]] = (total + n, tokens + t)
        for i, full in long_texts.items():
            nll[i] = sliding_window_nll(
                model, full["input_ids"], encoder.max_length, stride, full["labels"], batch_size=batch_size
            )
    # how the rows were scored, for the ``perplexity_detail`` and ``generation`` facts
    scoring: dict[str, Any] = {"window": encoder.max_length, "stride": stride, "long_texts": set(long_texts)}
    wants_text = [m for m in GENERATION_METRICS if m in metrics]
    answerable = [i for i, e in enumerate(examples) if e.text is None]
    sample = _sample(examples, answerable, max_samples) if wants_text else []
    prompts, cut = _fit_prompts(model, [encoder.prompt_ids(examples[i]) for i in sample], max_new_tokens)
    outs = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    generated = dict(zip(sample, outs, strict=True))
    scoring["prompts_cut"] = {sample[k] for k in cut}

    result = _score(examples, range(len(examples)), nll, generated, metrics, max_new_tokens, scoring)
    tasks = sorted({e.task for e in examples})
    if len(tasks) > 1:
        result["by_task"] = {
            t: _score(
                examples,
                [i for i, e in enumerate(examples) if e.task == t],
                nll,
                generated,
                metrics,
                max_new_tokens,
                scoring,
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


def _long_texts(encoder: Encoder, examples: list[Example]) -> dict[int, dict[str, list[int]]]:
    """Full encodings of the ``text`` examples longer than the encoder's window, by index."""
    out = {}
    for i, ex in enumerate(examples):
        if ex.text is not None:
            full = encoder.encode(ex, truncate=False)
            if len(full["input_ids"]) > encoder.max_length:
                out[i] = full
    return out


def _fit_prompts(model: Any, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], list[int]]:
    """(the prompts, each within the model's context less ``max_new_tokens``; which of them were cut).

    A prompt too long for the context would make the model fail or answer past what it was trained on;
    it is cut from the middle, as held-out rows are, keeping its instruction and the assistant header.
    """
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    room = context - max_new_tokens if context else None
    cut = [k for k, p in enumerate(prompts) if room is not None and len(p) > room]
    if cut and room < MIN_PROMPT_TOKENS:  # the same floor as held-out rows (see MIN_PROMPT_TOKENS)
        raise ConfigError(
            f"eval.max_new_tokens={max_new_tokens} leaves {max(room, 0)} of the model's {context} positions "
            f"for the prompt; lower eval.max_new_tokens to at most {context - MIN_PROMPT_TOKENS}"
        )
    return [cut_middle(p, room) if k in cut else p for k, p in enumerate(prompts)], cut


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
    scoring: dict[str, Any],
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if nll:
        agg = aggregate([nll[i] for i in index])
        result["perplexity"] = agg["perplexity"]
        result["perplexity_detail"] = {"nll": agg["nll"], "tokens": agg["tokens"], "examples": len(index)}
        if n_long := sum(i in scoring["long_texts"] for i in index):
            result["perplexity_detail"]["sliding_window"] = {
                "examples": n_long,
                "window": scoring["window"],
                "stride": scoring["stride"],
            }
    gen = [i for i in index if i in generated]
    if gen:
        hyps = [generated[i].text for i in gen]
        refs = [list(examples[i].references) for i in gen]
        if "bleu" in metrics:
            result["bleu"] = M.bleu(hyps, refs)
        if "rouge" in metrics:
            result["rouge"] = M.rouge(hyps, refs)
        if "chrf" in metrics:
            result["chrf"] = M.chrf(hyps, refs)
        if "exact_match" in metrics:
            result["exact_match"] = M.exact_match(hyps, refs)
        if "token_f1" in metrics:
            result["token_f1"] = M.token_f1(hyps, refs)
        # label-like is judged on every held-out answer in scope, not only the generated sample
        if any(m in metrics for m in LABEL_METRICS) and M.is_label_like(
            [examples[i].references for i in index if examples[i].text is None]
        ):
            if "accuracy" in metrics:
                result["accuracy"] = M.accuracy(hyps, refs)
            if "macro_f1" in metrics:
                result["macro_f1"] = M.macro_f1(hyps, refs)
        outs = [generated[i] for i in gen]
        result["generation"] = {
            "samples": len(outs),
            "stopped_at_eos": sum(o.stopped for o in outs) / len(outs),
            "mean_new_tokens": sum(o.new_tokens for o in outs) / len(outs),
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
        }
        if n_cut := sum(i in scoring["prompts_cut"] for i in gen):
            result["generation"]["prompts_cut"] = n_cut
    return result


def metric_settings(stride: int = 256) -> dict[str, Any]:
    """How each metric was computed (implementation and settings), written next to the numbers.

    ``stride`` is the one given to `evaluate_model` for sliding-window perplexity.
    """
    return {
        "perplexity": {
            "implementation": "lmtune (torch cross_entropy)",
            "measure": "exp(sum NLL / sum scored tokens) over answer tokens (all tokens for text data)",
            "long_text": (
                "text rows longer than data.max_length: sliding window of data.max_length tokens "
                "(Transformers 'Perplexity of fixed-length models' convention), every token after the first "
                "scored once; a stride of the window or more is taken as window - 1"
            ),
            "long_prompt": (
                "prompt/answer rows longer than data.max_length: the answer whole, tokens cut from the middle "
                "of the prompt (counted in data_report.json, overlong.eval); none is dropped"
            ),
            "stride": stride,
        },
        "bleu": M.BLEU_SETTINGS,
        "rouge": M.ROUGE_SETTINGS,
        "chrf": M.CHRF_SETTINGS,
        "exact_match": M.SQUAD_SETTINGS,
        "token_f1": M.SQUAD_SETTINGS,
        "accuracy": {**M.LABEL_SETTINGS, "function": "sklearn.metrics.accuracy_score"},
        "macro_f1": {
            **M.LABEL_SETTINGS,
            "function": "sklearn.metrics.f1_score(average='macro', labels=the reference classes, zero_division=0)",
        },
    }
