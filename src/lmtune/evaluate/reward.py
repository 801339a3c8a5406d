"""Reward-model scores for (prompt, answer) pairs: a learned judge of answer quality.

BLEU and ROUGE need references and reward wording, not quality; a reward model trained on
human preferences (e.g. OpenAssistant/reward-model-deberta-v3-large-v2) scores an answer to a
prompt directly.  It is used as its model card shows: the tokenizer gets
``(question, answer)`` as a text pair and the single logit is the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

REWARD_SETTINGS = {
    "implementation": "transformers AutoModelForSequenceClassification",
    "input": "tokenizer(prompt, answer) as a text pair, truncated to the tokenizer's model_max_length",
    "score": "the logit of a single-output head; the last label's logit of a multi-label head",
}


def load_reward_model(name: str, argument: str = "eval.reward_model") -> tuple[Any, Any]:
    """(model, tokenizer) of a sequence-classification reward model: hub id or local folder.

    Goes through `lmtune.models.resolve`, so a local folder loads with no network and an
    uncached hub id offline fails at once with a message.  Never runs the repository's own
    code (``trust_remote_code`` stays off).
    """
    from lmtune.config import ModelConfig
    from lmtune.models import load_model

    # the one door for weights (safetensors only, hub policy); never the repository's own code
    model, tokenizer, source = load_model(ModelConfig(name=name, trust_remote_code=False, dtype="float32"),
                                          argument=argument, head="score")  # fmt: skip
    if tokenizer.pad_token is None:  # batches need padding; pad positions get attention mask 0
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:  # last-token heads (Llama, GPT-2) find the last real token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    model.lmtune_chat_layout = trained_on_conversations(Path(source) if Path(source).is_dir() else source)
    return model.eval(), tokenizer


def _exchange(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def trained_on_conversations(source: Any) -> bool:
    """A reward model lmtune trained (``objective: reward``) scores chat-template conversations, as TRL
    trained it; other reward models (OpenAssistant's) take (prompt, answer) as a text pair."""
    from lmtune.config import read_yaml

    config = Path(source) / "config.yaml" if not isinstance(source, str) else None
    return bool(config and config.is_file() and read_yaml(config).get("objective") == "reward")


def reward_scores(
    model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8
) -> list[float]:
    """One score per (prompt, answer) pair, in the order given; higher is better.

    A single-output head gives ``logits[0]``, as in OpenAssistant's reward models.  A 2-label
    head (a "bad / good" classifier) gives the last label's logit: by the usual convention the
    last label is the positive one, and a logit, unlike a softmax probability, keeps the
    differences between confident answers.
    """
    import torch

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if getattr(model, "lmtune_chat_layout", False):
        turns = [_exchange(p, a) for p, a in zip(prompts, answers, strict=True)]
        return conversation_scores(model, tokenizer, turns, batch_size)
    scores: list[float] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                list(prompts[start : start + batch_size]),
                list(answers[start : start + batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(model.device)
            logits = model(**batch).logits  # (B, num_labels)
            scores += logits[:, -1].float().tolist()
    model.train(was_training)
    return scores


def reward_summary(scores: Sequence[float]) -> dict[str, Any]:
    """Mean, spread and quantiles of one model's reward scores (and the scores themselves).

    ``std`` is the population standard deviation; quantiles are numpy's linear ones.  With no
    scores, every statistic is None.
    """
    import numpy as np

    values = np.asarray(scores, dtype=float)
    if not len(values):
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "quantiles": None, "scores": []}
    p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {"p10": float(p10), "p50": float(p50), "p90": float(p90)},
        "scores": [float(v) for v in values],
    }


def conversation_scores(
    model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], batch_size: int = 8
) -> list[float]:
    """One score per whole conversation, laid out with the tokenizer's chat template.

    This is how TRL's RewardTrainer lays out conversational pairs, so a reward model trained with
    ``objective: reward`` is scored on the text it was trained on.
    """
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
    return _text_scores(model, tokenizer, texts, batch_size)


def _text_scores(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int) -> list[float]:
    import torch

    scores: list[float] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                              add_special_tokens=False, return_tensors="pt").to(model.device)  # fmt: skip
            scores += model(**batch).logits[:, -1].float().tolist()
    model.train(was_training)
    return scores


def compare_rewards(base: Sequence[float], finetuned: Sequence[float]) -> dict[str, Any]:
    """Per prompt, which model's answer the reward model preferred: shares of the pairs.

    A mean can rise while most answers get worse; the per-prompt shares show which happened.
    Ties are exact equality (e.g. both models gave the same answer).
    """
    if len(base) != len(finetuned):
        raise ValueError(f"{len(base)} base scores but {len(finetuned)} fine-tuned scores")
    n = len(base)
    if not n:
        return {"finetuned_higher": None, "ties": None, "base_higher": None, "pairs": 0}
    higher = sum(f > b for b, f in zip(base, finetuned, strict=True))
    lower = sum(f < b for b, f in zip(base, finetuned, strict=True))
    return {"finetuned_higher": higher / n, "ties": (n - higher - lower) / n, "base_higher": lower / n, "pairs": n}
