"""What a trial scored: the objective's number in its ``metrics.json``.

Whether the objective names such a number, and which way is better, is the config's to check
(``lmtune.config.sweep``): it is checked when the config loads.
"""

from __future__ import annotations

import math
from typing import Any

from lmtune.config.sweep import EVAL_LOSS
from lmtune.report.tables import value


def objective_value(metrics: dict[str, Any], name: str) -> float | None:
    """The objective's number in a trial's metrics.json, None when absent.

    ``finetuned.bleu`` names ``finetuned.bleu.bleu`` (a metric's headline number under its own name).
    """
    if name == EVAL_LOSS:
        ppl = value(metrics, "finetuned.perplexity")
        return math.log(ppl) if ppl else None
    found = value(metrics, name)
    return found if found is not None else value(metrics, f"{name}.{name.split('.')[-1]}")
