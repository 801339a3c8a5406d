"""Held-out preference pairs: does a model rank the chosen answer above the rejected one, and by how much?

The same measures for the base and the tuned model, so they sit side by side:

* ``accuracy``: share of pairs where the model gives the chosen answer a higher log-probability
  than the rejected one (for a DPO-tuned policy this is the sign of the reference's margin plus the
  implicit reward margin divided by beta, so it rises exactly when the objective did its work);
* ``margin``: mean of log p(chosen) - log p(rejected), in nats (summed over answer tokens);
* ``chosen_logp`` / ``rejected_logp``: mean summed log-probabilities;
* ``implicit_accuracy`` / ``implicit_margin`` (tuned models with a reference only): DPO's implicit
  reward ``beta * (log pi - log pi_ref)``, chosen against rejected.

Log-probabilities come from :func:`lmtune.evaluate.perplexity.example_nll`, the same code that
scores perplexity: one implementation of "log-likelihood of an answer" in the project.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.evaluate.perplexity import example_nll


def answer_logps(
    model: Any, encoder: Encoder, examples: list[Example], answers: list[str], batch_size: int
) -> list[float]:
    """Summed log-probability of each answer after its example's prompt."""
    rows = []
    for ex, answer in zip(examples, answers, strict=True):
        rows.append(encoder.encode(with_answer(ex, answer)))
    return [-nll for nll, _ in example_nll(model, rows, encoder.tokenizer.pad_token_id, batch_size)]


def with_answer(ex: Example, answer: str) -> Example:
    """``ex`` with ``answer`` as its final assistant turn (added after a prompt-only example's question)."""
    turns = (
        ex.messages if ex.messages and ex.messages[-1]["role"] == "assistant" else (*ex.messages, {"role": "assistant"})
    )
    return replace(ex, messages=(*turns[:-1], {**turns[-1], "content": answer}), references=(answer,), rejected=None)


def pair_logps(
    model: Any, encoder: Encoder, pairs: list[Example], batch_size: int = 8
) -> tuple[list[float], list[float]]:
    chosen = answer_logps(model, encoder, pairs, [p.references[0] for p in pairs], batch_size)
    rejected = answer_logps(model, encoder, pairs, [p.rejected or "" for p in pairs], batch_size)
    return chosen, rejected


def preference_metrics(
    model: Any,
    encoder: Encoder,
    pairs: list[Example],
    batch_size: int = 8,
    reference: AbstractContextManager | None = None,
    beta: float | None = None,
) -> dict[str, Any]:
    """The measures above on ``pairs`` (examples with ``rejected``).

    ``reference``: a context in which ``model`` is the reference policy (``model.disable_adapter()``
    for a PEFT model); with ``beta`` it adds DPO's implicit-reward accuracy and margin.
    """
    chosen, rejected = pair_logps(model, encoder, pairs, batch_size)
    n = len(pairs)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    out: dict[str, Any] = {
        "pairs": n,
        "accuracy": sum(m > 0 for m in margins) / n,
        "margin": sum(margins) / n,
        "chosen_logp": sum(chosen) / n,
        "rejected_logp": sum(rejected) / n,
    }
    if reference is not None and beta is not None:
        with reference:
            ref_chosen, ref_rejected = pair_logps(model, encoder, pairs, batch_size)
        implicit = [
            beta * ((c - rc) - (r - rr))
            for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected, strict=True)
        ]
        out["implicit_accuracy"] = sum(m > 0 for m in implicit) / n
        out["implicit_margin"] = sum(implicit) / n
    return out


def sequence_kl(
    model: Any, encoder: Encoder, examples: list[Example], answers: list[str], reference: AbstractContextManager,
    batch_size: int = 8,
) -> float:  # fmt: skip
    """KL(tuned || reference) estimated on the tuned model's own answers: mean of log pi - log pi_ref per answer.

    The answers are samples (greedy here) of the tuned policy, so this is the usual Monte-Carlo
    estimate the RLHF literature reports, in nats per answer.
    """
    if not examples:
        return 0.0
    tuned = answer_logps(model, encoder, examples, answers, batch_size)
    with reference:
        ref = answer_logps(model, encoder, examples, answers, batch_size)
    return sum(t - r for t, r in zip(tuned, ref, strict=True)) / len(examples)


def reference_context(model: Any) -> AbstractContextManager:
    """The reference policy of a PEFT-tuned model: the same weights with the adapter switched off."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def reward_pair_metrics(model: Any, tokenizer: Any, pairs: list[Example], batch_size: int = 8) -> dict[str, Any]:
    """A reward model's held-out pairwise accuracy and mean margin (score(chosen) - score(rejected))."""
    from lmtune.evaluate.reward import conversation_scores

    def conversation(ex: Example, answer: str) -> list[dict[str, str]]:
        return [*ex.messages[:-1], {**ex.messages[-1], "content": answer}]

    chosen = conversation_scores(model, tokenizer, [conversation(p, p.references[0]) for p in pairs], batch_size)
    rejected = conversation_scores(model, tokenizer, [conversation(p, p.rejected or "") for p in pairs], batch_size)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(pairs)
    return {
        "pairs": n,
        "accuracy": sum(m > 0 for m in margins) / n,
        "margin": sum(margins) / n,
        "chosen_score": sum(chosen) / n,
        "rejected_score": sum(rejected) / n,
    }
