"""Held-out rows: every example is kept and scored, a long one within ``data.max_length``.

``data.overlong`` (drop / truncate) is right for training and wrong for evaluation: dropping long held-out
examples scores the before/after table on a smaller set that depends on the tokenizer, and truncating at the
end cuts the very answer being scored.  So a long held-out prompt/answer row keeps its answer whole and the
start and the end of its prompt, losing tokens from the middle: the start holds the template's first turn
markers, the system prompt and (usually) the instruction; the end holds the close of the user turn and the
assistant header the answer follows.  A long ``text`` row is cut at ``max_length``: perplexity scores the
text whole with a sliding window, and the row is only for what needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmtune.data.encode import Encoder
from lmtune.data.example import Example
from lmtune.errors import DataError

# The fewest prompt tokens a cut row keeps (the whole prompt when it is shorter).  A chat template spends
# about that many on its own markers (ChatML: "<|im_start|>user\n" ... "<|im_end|>\n<|im_start|>assistant\n"
# is ~8 tokens before any system turn), so below it the answer would be scored after a prompt with no request
# left in it: a number that says nothing about the task.  Asking for a larger data.max_length is better.
MIN_PROMPT_TOKENS = 16


def cut_middle(ids: Sequence[int], keep: int) -> list[int]:
    """The first and last tokens of ``ids``, ``keep`` in all (all of them when they fit).

    The end gets the odd token: it holds the assistant header that the answer follows.
    """
    if len(ids) <= keep:
        return list(ids)
    head = keep // 2
    return [*ids[:head], *ids[len(ids) - (keep - head) :]]


def fit_held_out(encoder: Encoder, example: Example) -> tuple[dict[str, list[int]], int]:
    """(the example's row within ``encoder.max_length``, how many tokens it lost).

    Raises:
        DataError: the answer does not fit with ``MIN_PROMPT_TOKENS`` of its prompt (one line: file:line).
    """
    enc = encoder.encode(example, truncate=False)
    extra = len(enc["input_ids"]) - encoder.max_length
    if extra <= 0:
        return enc, 0
    if example.text is not None:
        return {k: v[: encoder.max_length] for k, v in enc.items()}, extra
    # the prompt's tokens are a prefix of the row: the same segments, tokenised the same way
    n_prompt = len(encoder.prompt_ids(example))
    room = encoder.max_length - (len(enc["input_ids"]) - n_prompt)
    if room < min(MIN_PROMPT_TOKENS, n_prompt):
        raise _answer_too_long(example, len(enc["input_ids"]) - n_prompt, n_prompt, encoder.max_length)
    # labels are cut at the same positions, so they stay aligned (IGNORE on the prompt unless train_on_prompt)
    return {k: [*cut_middle(v[:n_prompt], room), *v[n_prompt:]] for k, v in enc.items()}, extra


def _answer_too_long(example: Example, answer: int, n_prompt: int, max_length: int) -> DataError:
    need = answer + min(MIN_PROMPT_TOKENS, n_prompt)
    return DataError(
        f"{example.source or 'data.eval'}: held-out answer is {answer} tokens; data.max_length={max_length} "
        f"cannot hold it with its prompt; raise data.max_length to at least {need}"
    )


def encode_held_out(
    encoder: Encoder, examples: list[Example]
) -> tuple[list[dict[str, np.ndarray]], list[int], dict[str, int]]:
    """(rows, each row's example index, what the length limit did) — no example is ever dropped.

    An example with several references gets a row per reference, so perplexity and the validation loss
    score every held-out answer; each row is cut on its own.  The counts: ``cut`` examples had their
    prompt cut, losing ``tokens_cut`` tokens in all (an example counts once, with its most-cut row) and
    ``max_tokens_cut`` at most; ``sliding_window`` (only when there are some) long ``text`` examples.
    ``dropped`` stays 0, written for the reader comparing it with the training split's.
    """
    rows: list[dict[str, np.ndarray]] = []
    owner: list[int] = []
    counts = {"dropped": 0, "cut": 0, "tokens_cut": 0, "max_tokens_cut": 0}
    for i, ex in enumerate(examples):
        fitted = [fit_held_out(encoder, variant) for variant in ex.each_reference()]
        rows += [_int32(row) for row, _ in fitted]
        owner += [i] * len(fitted)
        lost = max(n for _, n in fitted)
        if lost and ex.text is not None:
            counts["sliding_window"] = counts.get("sliding_window", 0) + 1
        elif lost:
            counts["cut"] += 1
            counts["tokens_cut"] += lost
            counts["max_tokens_cut"] = max(counts["max_tokens_cut"], lost)
    return rows, owner, counts


def _int32(row: dict[str, Any]) -> dict[str, np.ndarray]:
    # int32 arrays: a quarter of the memory of Python int lists
    return {k: np.asarray(v, dtype=np.int32) for k, v in row.items()}
