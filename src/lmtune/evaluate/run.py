"""One evaluation pass: perplexity on all held-out rows, generation metrics on a sample."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.evaluate import metrics as M
from lmtune.evaluate.generate import generate
from lmtune.evaluate.perplexity import perplexity


def evaluate_model(
    model: Any,
    tokenizer: Any,
    encoder: Encoder,
    examples: list[Example],
    metrics: Sequence[str] = ("perplexity", "bleu", "rouge"),
    max_samples: int | None = 200,
    max_new_tokens: int = 128,
    batch_size: int = 16,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns (metrics ``M``, predictions) for one model on held-out examples.

    ``M`` holds ``perplexity`` and, when asked for and the data has prompts,
    ``bleu`` / ``rouge`` on greedy answers to the first ``max_samples`` examples.
    """
    result: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    start = time.perf_counter()
    if "perplexity" in metrics:
        encoded = [encoder.encode(e) for e in examples]
        ppl = perplexity(model, encoded, tokenizer.pad_token_id, batch_size=batch_size)
        result["perplexity"] = ppl["perplexity"]
        result["perplexity_detail"] = {"nll": ppl["nll"], "tokens": ppl["tokens"], "examples": len(examples)}
    wants_text = [m for m in ("bleu", "rouge") if m in metrics]
    answerable = [e for e in examples if e.text is None]
    if wants_text and answerable:
        sample = answerable[:max_samples] if max_samples else answerable
        outs = generate(model, tokenizer, [encoder.prompt_ids(e) for e in sample], max_new_tokens, batch_size)
        hyps = [o.text for o in outs]
        refs = [list(e.references) for e in sample]
        if "bleu" in metrics:
            result["bleu"] = M.bleu(hyps, refs)
        if "rouge" in metrics:
            result["rouge"] = M.rouge(hyps, refs)
        result["generation"] = {
            "samples": len(sample),
            "stopped_at_eos": sum(o.stopped for o in outs) / len(outs),
            "mean_new_tokens": sum(o.new_tokens for o in outs) / len(outs),
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
        }
        predictions = [
            {"prompt": e.prompt, "reference": r[0] if len(r) == 1 else r, "prediction": o.text, "stopped": o.stopped}
            for e, r, o in zip(sample, refs, outs, strict=True)
        ]
    result["eval_time_s"] = time.perf_counter() - start
    return result, predictions


def metric_settings() -> dict[str, Any]:
    """How each metric was computed, written next to the numbers."""
    return {
        "perplexity": "exp(sum NLL / sum scored tokens) over answer tokens (all tokens for text data)",
        "bleu": M.BLEU_SETTINGS,
        "rouge": M.ROUGE_SETTINGS,
    }
