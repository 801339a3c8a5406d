"""Evaluation: perplexity (sliding window for long text), greedy generation, metrics on the
generations (BLEU, ROUGE, chrF, exact match, token F1, accuracy, macro-F1), reward-model scores."""

from lmtune.evaluate.run import evaluate_model

__all__ = ["evaluate_model"]
