"""Generation metrics on predictions vs references.

BLEU and chrF from sacrebleu, ROUGE from rouge-score, accuracy / macro-F1 from scikit-learn;
exact match and token F1 follow the official SQuAD v1.1 evaluation script.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

BLEU_SETTINGS = {"implementation": "sacrebleu", "tokenize": "13a", "lowercase": False, "scale": "0-1"}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_SETTINGS = {
    "implementation": "rouge-score",
    "use_stemmer": False,
    "measure": "F1, mean over examples; best reference per example",
}
CHRF_SETTINGS = {
    "implementation": "sacrebleu corpus_chrf",
    "char_order": 6,
    "word_order": 0,  # 0: chrF; 2 would be chrF++
    "beta": 2,
    "lowercase": False,
    "whitespace": False,
    "scale": "0-1",
    "references": "best reference per example (sacrebleu's rule for several references)",
}
SQUAD_SETTINGS = {
    "implementation": "lmtune, after the official SQuAD v1.1 evaluate script",
    "normalisation": "lowercase, strip punctuation, drop articles a/an/the, collapse whitespace",
    "measure": "best reference per example, mean over examples",
    "scale": "0-1",
}
MAX_LABELS = 20
MAX_LABEL_WORDS = 5
MIN_PER_LABEL = 2
LABEL_SETTINGS = {
    "implementation": "scikit-learn",
    "normalisation": "strip + casefold",
    "reference": "the first reference of each example",
    "reported": (
        f"only when the held-out answers are label-like: 2 to {MAX_LABELS} distinct answers "
        f"of at most {MAX_LABEL_WORDS} words, each seen at least {MIN_PER_LABEL} times"
    ),
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


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus chrF (character n-gram F-score) on a 0–1 scale; kinder than BLEU to short or inflected answers."""
    import sacrebleu

    score = sacrebleu.corpus_chrf(
        list(predictions),
        _reference_streams(references),
        char_order=CHRF_SETTINGS["char_order"],
        word_order=CHRF_SETTINGS["word_order"],
        beta=CHRF_SETTINGS["beta"],
    )
    return {"chrf": score.score / 100}


# --------------------------------------------------------------------------- SQuAD-style answers
# Exact match and token F1 as the official SQuAD v1.1 evaluate script computes them (normalize_answer,
# f1_score, exact_match_score, metric_max_over_ground_truths), on a 0–1 scale instead of 0–100.
# Written out here because no maintained package computes them offline: Hugging Face `evaluate`
# downloads the metric script from the hub.

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:  # also when either side is empty, as in the v1.1 script
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _best_mean(fn: Any, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    scores = [max(fn(p, r) for r in refs) for p, refs in zip(predictions, references, strict=True)]
    return sum(scores) / max(len(scores), 1)


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Share of predictions equal to one of their references after SQuAD normalisation."""
    return _best_mean(_exact, predictions, references)


def token_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean SQuAD token-overlap F1 (best reference per example): partial credit for short answers."""
    return _best_mean(_f1, predictions, references)


# --------------------------------------------------------------------------- labels


def normalize_label(text: str) -> str:
    return text.strip().casefold()


def is_label_like(references: Sequence[Sequence[str]]) -> bool:
    """Are the answers class labels, so that accuracy and macro-F1 mean something?

    Looks at each example's first reference, normalised: at least two distinct answers,
    at most ``MAX_LABELS`` (20) of them, each at most ``MAX_LABEL_WORDS`` (5) words, and
    each seen at least ``MIN_PER_LABEL`` (2) times.  ``clean.is_classification_like``
    asks for 10+ rows and 5+ per class, right for a training set but too strict for a
    small held-out set, and it does not check that the answers are short.
    """
    labels = Counter(normalize_label(refs[0]) for refs in references if refs)
    return (
        2 <= len(labels) <= MAX_LABELS
        and all(len(label.split()) <= MAX_LABEL_WORDS for label in labels)
        and min(labels.values()) >= MIN_PER_LABEL
    )


def _labels(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return [normalize_label(r[0]) for r in references], [normalize_label(p) for p in predictions]


def accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Share of predictions equal to the first reference (strip + casefold); for label-like answers."""
    from sklearn.metrics import accuracy_score

    y_true, y_pred = _labels(predictions, references)
    return float(accuracy_score(y_true, y_pred))


def macro_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Unweighted mean of per-class F1 over the reference classes, so rare classes count as much as common ones.

    Predictions outside the reference classes (free text) count as misses for the true
    class; they do not become classes of their own, which would add a 0 to the average.
    """
    from sklearn.metrics import f1_score

    y_true, y_pred = _labels(predictions, references)
    return float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0))
