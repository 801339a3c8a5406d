"""Seeded, stable splits and weighted task mixtures.

Order comes from a hash of (seed, row content), not from a random generator
over row positions: the same rows and seed give the same split on any machine,
whatever order the rows come in.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from lmtune.data.clean import _canonical, row_key
from lmtune.data.formats import Example


def _order_key(ex: Example, seed: int, salt: str = "") -> str:
    return hashlib.sha256(f"{seed}|{salt}|{row_key(ex)}".encode()).hexdigest()


def split(
    examples: list[Example], fractions: tuple[float, ...], seed: int, stratify: bool = False
) -> list[list[Example]]:
    """Split into len(fractions) + 1 parts: the held-out parts first, the rest last.

    With ``stratify`` each distinct answer is split on its own, so every part keeps
    the class balance.  Each part keeps the rows' original order.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        label = _canonical(ex.messages[-1]["content"]) if stratify and ex.text is None else ""
        groups[label].append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for members in groups.values():
        members.sort(key=lambda i: _order_key(examples[i], seed))
        start = 0
        for p, fraction in enumerate(fractions):
            n = round(len(members) * fraction)
            parts[p] += members[start : start + n]
            start += n
        parts[-1] += members[start:]
    return [[examples[i] for i in sorted(part)] for part in parts]


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
