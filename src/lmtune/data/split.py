"""Seeded, stable splits, held-out rows grouped by prompt, and weighted task mixtures.

Order comes from a hash of (seed, row or prompt content), not from a random generator
over row positions: the same rows and seed give the same split on any machine,
whatever order the rows come in.

By default rows that share a prompt (normalised as for deduplication) are one group and
go to the same side of every split: data with several answers per prompt (data-to-text,
summarisation, preference data) would otherwise hold out rows whose prompt is also trained
on, and the contamination check would then drop nearly all of them.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import replace

from lmtune.data.clean import _canonical, answer_of, prompt_key, row_key
from lmtune.data.formats import Example


def _order_key(ex: Example, seed: int, salt: str = "") -> str:
    return _hash_key(row_key(ex), seed, salt)


def _hash_key(key: str, seed: int, salt: str = "") -> str:
    return hashlib.sha256(f"{seed}|{salt}|{key}".encode()).hexdigest()


def split(
    examples: list[Example],
    fractions: tuple[float, ...],
    seed: int,
    stratify: bool = False,
    by_prompt: bool = True,
) -> list[list[Example]]:
    """Split into len(fractions) + 1 parts: the held-out parts first, the rest last.

    With ``by_prompt`` the fractions count groups of rows sharing a prompt, and a group is
    never cut; without it, single rows.  With ``stratify`` each distinct answer (a group's
    first answer) is split on its own, so every part keeps the class balance.  Each part
    keeps the rows' original order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[prompt_key(ex) if by_prompt else row_key(ex)].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        first = examples[members[0]]
        label = _canonical(answer_of(first)) if stratify and first.text is None else ""
        strata[label].append(key)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for keys in strata.values():
        keys.sort(key=lambda k: _hash_key(k, seed))
        start = 0
        for p, fraction in enumerate(fractions):
            n = round(len(keys) * fraction)
            parts[p] += [i for k in keys[start : start + n] for i in groups[k]]
            start += n
        parts[-1] += [i for k in keys[start:] for i in groups[k]]
    return [[examples[i] for i in sorted(part)] for part in parts]


def count_prompts(examples: list[Example]) -> int:
    """Distinct prompts (normalised as for deduplication) among the examples."""
    return len({prompt_key(ex) for ex in examples})


def group_references(examples: list[Example]) -> list[Example]:
    """Held-out rows that share a prompt -> one example whose references are all their answers.

    The example keeps the first row's conversation, place and task; its ``references`` hold
    every distinct answer of the group in order of appearance (multi-reference BLEU, best-reference
    ROUGE; perplexity scores each answer).  ``text``, preference, KTO and prompt_only rows are left
    as they are, one example per row: a pair's or a labelled answer's meaning is its own row's.
    """
    merged: dict[str, Example] = {}
    out: list[Example | str] = []  # an example, or the key of a group kept in ``merged``
    for ex in examples:
        if ex.text is not None or ex.is_preference or ex.label is not None or ex.messages[-1]["role"] != "assistant":
            out.append(ex)
            continue
        key = prompt_key(ex)
        if key not in merged:
            merged[key] = ex
            out.append(key)
            continue
        first = merged[key]
        extra = tuple(r for r in ex.references if r not in first.references)
        merged[key] = replace(first, references=first.references + extra)
    return [merged[item] if isinstance(item, str) else item for item in out]


def mix(sources: list[list[Example]], weights: list[float | None], seed: int) -> list[Example]:
    """Training rows drawn from several tasks in proportion to their weights.

    Without weights every row is used once.  With weights the mixture keeps the
    total row count of the sources and gives source i a share ``w_i / sum(w)``:
    a small task is repeated (every row as evenly as possible), a large one
    subsampled (a seeded, stable choice).
    """
    if all(w is None for w in weights):
        return [ex for rows in sources for ex in rows]
    # a source whose rows were all cleaned away has nothing to repeat; the others share its weight
    pairs = [(rows, 1.0 if x is None else x) for rows, x in zip(sources, weights, strict=True) if rows]
    total = sum(len(rows) for rows, _ in pairs)
    weight_sum = sum(x for _, x in pairs)
    # largest remainders: the shares add up to exactly the total (rounding each one may not)
    quotas = [total * weight / weight_sum for _, weight in pairs]
    wants = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(pairs)), key=lambda i: (wants[i] - quotas[i], i))
    for i in by_remainder[: total - sum(wants)]:
        wants[i] += 1
    mixed: list[Example] = []
    for (rows, _), want in zip(pairs, wants, strict=True):
        ordered = sorted(rows, key=lambda ex: _order_key(ex, seed, "mix"))
        full, rest = divmod(want, len(ordered))
        mixed += ordered * full + ordered[:rest]
    return mixed  # Trainer's seeded sampler shuffles the tasks together
