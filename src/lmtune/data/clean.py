"""Cleaning steps a careful practitioner does by hand, each counted.

normalise (NFC, line endings, ends stripped, invisible controls dropped) ->
drop empty answers -> exact duplicates -> near-duplicates (MinHash/LSH) ->
held-out rows whose prompt is in the training data (contamination).
Token-length limits are applied later, when the examples are tokenised.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import replace

from lmtune.data.formats import Example

# Control characters other than tab and newline, zero-width spaces and the BOM: invisible in
# an editor, yet they change tokenisation and defeat deduplication.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"\s+")
SHINGLE_WORDS = 5
NUM_PERM = 64


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text).strip()


def normalize_example(ex: Example) -> Example:
    if ex.text is not None:
        return replace(ex, text=normalize_text(ex.text))
    messages = tuple({**m, "content": normalize_text(m["content"])} for m in ex.messages)
    rejected = None if ex.rejected is None else normalize_text(ex.rejected)
    return replace(ex, messages=messages, references=tuple(normalize_text(r) for r in ex.references), rejected=rejected)


def is_empty(ex: Example) -> bool:
    """No answer to learn from (or an empty document, an empty rejected answer, or an empty prompt)."""
    if ex.text is not None:
        return not ex.text.strip()
    has_answer = ex.messages[-1]["role"] == "assistant"  # a prompt_only row has none, and needs none
    no_answer = has_answer and not ex.messages[-1]["content"].strip()
    no_rejected = ex.rejected is not None and not ex.rejected.strip()
    return no_answer or no_rejected or not any(m["content"].strip() for m in ex.prompt_messages)


def answer_of(ex: Example) -> str:
    """The final answer (a prompt_only row's reference, if any); "" for ``text`` rows."""
    if ex.text is not None:
        return ""
    if ex.messages[-1]["role"] != "assistant":
        return ex.references[0] if ex.references else ""
    return ex.messages[-1]["content"]


def _canonical(text: str) -> str:
    """Case, spacing and Unicode form ignored: what "the same row" means for deduplication."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def prompt_key(ex: Example) -> str:
    """Everything the model is given (all turns but the last); the whole text for ``text`` rows."""
    if ex.text is not None:
        return _canonical(ex.text)
    return _canonical("\n".join(f"{m['role']}: {m['content']}" for m in ex.prompt_messages))


def row_key(ex: Example) -> str:
    """Prompt and answer (and a pair's rejected answer, a KTO row's label), canonicalised, hashed.

    Stable across machines and runs; distinct pairs that share a prompt and a chosen answer differ.
    """
    key = f"{prompt_key(ex)}\x00{_canonical(answer_of(ex))}{_preference_part(ex)}"
    return hashlib.sha256(key.encode()).hexdigest()


def _preference_part(ex: Example) -> str:
    """ "" for every other row, so their keys (and so splits and mixtures) are what they always were."""
    rejected = "" if ex.rejected is None else f"\x00rejected: {_canonical(ex.rejected)}"
    label = "" if ex.label is None else f"\x00label: {ex.label}"
    return rejected + label


def drop_duplicates(examples: list[Example]) -> tuple[list[Example], int]:
    """Keep the first of every group of rows equal after canonicalisation."""
    seen: set[str] = set()
    kept = []
    for ex in examples:
        key = row_key(ex)
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept, len(examples) - len(kept)


def _shingles(ex: Example) -> set[bytes]:
    if ex.text is not None:
        text = prompt_key(ex)
    else:  # a pair's rejected answer counts: pairs sharing a prompt and a chosen answer are not near-duplicates
        rejected = "" if ex.rejected is None else f" {_canonical(ex.rejected)}"
        text = f"{prompt_key(ex)} {_canonical(answer_of(ex))}{rejected}"
    words = text.split()
    n = min(SHINGLE_WORDS, max(1, len(words)))
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def drop_near_duplicates(examples: list[Example], threshold: float) -> tuple[list[Example], int]:
    """Keep the first of rows whose estimated Jaccard similarity (word 5-grams) exceeds ``threshold``.

    MinHash signatures + locality-sensitive hashing from ``datasketch``: near-linear time,
    where comparing every pair would be quadratic.
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    kept = []
    for i, ex in enumerate(examples):
        sig = MinHash(num_perm=NUM_PERM, seed=1)
        sig.update_batch(list(_shingles(ex)))
        if lsh.query(sig):
            continue
        lsh.insert(str(i), sig)
        kept.append(ex)
    return kept, len(examples) - len(kept)


def drop_contaminated(held_out: list[Example], train: list[Example]) -> tuple[list[Example], int]:
    """Held-out rows whose prompt also appears in the training data would measure memory, not skill."""
    train_prompts = {prompt_key(ex) for ex in train}
    kept = [ex for ex in held_out if prompt_key(ex) not in train_prompts]
    return kept, len(held_out) - len(kept)


def clean(
    examples: list[Example], normalize: bool, dedup: bool, near_dedup: bool, threshold: float
) -> tuple[list[Example], Counter[str]]:
    """The per-split steps; returns the kept rows and how many each step dropped."""
    dropped: Counter[str] = Counter()
    if normalize:
        examples = [normalize_example(ex) for ex in examples]
    kept = [ex for ex in examples if not is_empty(ex)]
    dropped["empty"] = len(examples) - len(kept)
    if dedup:
        kept, dropped["duplicate"] = drop_duplicates(kept)
    if near_dedup:
        kept, dropped["near_duplicate"] = drop_near_duplicates(kept, threshold)
    return kept, dropped


def answer_counts(examples: list[Example]) -> Counter[str]:
    """How often each (canonical) answer occurs: the class balance of classification-like data.

    Preference, KTO and prompt_only rows have no class: they are not counted.
    """
    return Counter(
        _canonical(ex.messages[-1]["content"])
        for ex in examples
        if ex.text is None and not ex.is_preference and ex.label is None and ex.messages[-1]["role"] == "assistant"
    )


def is_classification_like(examples: list[Example]) -> bool:
    """Few distinct answers, each seen often: labels, not free text."""
    counts = answer_counts(examples)
    if not counts or len(examples) < 10:
        return False
    return len(counts) <= 20 and len(examples) / len(counts) >= 5
