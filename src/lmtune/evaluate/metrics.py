"""BLEU from sacrebleu and ROUGE from rouge-score, on predictions vs references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BLEU_SETTINGS = {"implementation": "sacrebleu", "tokenize": "13a", "lowercase": False, "scale": "0-1"}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_SETTINGS = {
    "implementation": "rouge-score",
    "use_stemmer": False,
    "measure": "F1, mean over examples; best reference per example",
}


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU on a 0–1 scale, with its n-gram precisions, brevity penalty and length ratio.

    ``references[i]`` holds every reference of example i; sacrebleu takes them as
    reference streams, padded with None where an example has fewer.
    """
    import sacrebleu

    streams = _reference_streams(references)
    score = sacrebleu.corpus_bleu(list(predictions), streams)
    return {
        "bleu": score.score / 100,
        "precisions": [p / 100 for p in score.precisions],
        "brevity_penalty": score.bp,
        "length_ratio": score.ratio,
        "hyp_len": score.sys_len,
        "ref_len": score.ref_len,
    }


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    width = max(len(r) for r in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean rouge-score F-measures; for several references, each example takes its best."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=ROUGE_SETTINGS["use_stemmer"])
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(list(refs), pred)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    n = max(len(predictions), 1)
    return {t: totals[t] / n for t in ROUGE_TYPES}
