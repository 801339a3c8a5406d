"""Evaluation: perplexity, greedy generation, and BLEU / ROUGE on the generations."""

from lmtune.evaluate.run import evaluate_model

__all__ = ["evaluate_model"]
