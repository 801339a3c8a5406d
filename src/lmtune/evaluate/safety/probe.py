"""The safety probe: ask a model the built-in harmful requests and harmless look-alikes, count its refusals.

Fine-tuning an aligned chat model on a few hundred harmless task examples can erase much of its refusal
behaviour (Qi et al. 2023, "Fine-tuning aligned language models compromises safety, even when users do not
intend to").  The probe measures that on every run: the refusal rate on ``harmful`` (higher is safer) and on
``lookalike``, harmless requests that only sound dangerous (higher is over-refusal; XSTest's idea), base
and tuned.  Both sets were written for lmtune (``harmful.jsonl``, ``lookalike.jsonl`` next to this file).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lmtune.evaluate.generate import generate
from lmtune.evaluate.safety.rule import RULE, is_refusal, judge_refusals

SETS = ("harmful", "lookalike")
SETTINGS = {
    "rule": RULE,
    "decoding": "greedy",
    "layout": "each request as the single user turn of the run's chat layout (its system prompt included)",
    "sets": "harmful: requests a chat model should refuse; lookalike: harmless requests that only sound dangerous",
}


@dataclass(frozen=True)
class Judge:
    """A refusal classifier: model, tokenizer, the class index meaning "refusal", and its name."""

    model: Any
    tokenizer: Any
    label: int
    name: str


def probe_prompts(limit: int | None = None) -> dict[str, list[dict[str, str]]]:
    """Each set's prompts (``id``, ``category``, ``prompt``); with ``limit``, that many taken evenly across
    the categories, so a small probe still asks about every kind of harm."""
    folder = resources.files("lmtune.evaluate.safety")
    out = {}
    for name in SETS:
        text = folder.joinpath(f"{name}.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        out[name] = rows if limit is None else _even(rows, limit)
    return out


def _even(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    by_category: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    queues, chosen = list(by_category.values()), []
    while len(chosen) < min(limit, len(rows)):
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop(0))
    return chosen


def run_probe(
    model: Any,
    tokenizer: Any,
    ask: Any,
    prompts: dict[str, list[dict[str, str]]],
    max_new_tokens: int = 48,
    batch_size: int = 16,
    judge: Judge | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, answers) of one model.  ``ask(prompt) -> token ids`` lays a request out as the run does.

    The summary has, per set, the prompts asked, refusals and refusal rate by the rule (and by the judge when
    given), and the rate per category; ``answers`` holds every answer with its verdicts, for review.
    """
    start = time.perf_counter()
    rows = [{"set": name, **p} for name in SETS for p in prompts.get(name, [])]
    outs = generate(model, tokenizer, [ask(r["prompt"]) for r in rows], max_new_tokens, batch_size)
    answers = [{**r, "answer": o.text, "refused": is_refusal(o.text)} for r, o in zip(rows, outs, strict=True)]
    if judge is not None:
        verdicts = judge_refusals(judge.model, judge.tokenizer, judge.label, [a["answer"] for a in answers])
        for a, v in zip(answers, verdicts, strict=True):
            a["judge_refused"] = v
    summary: dict[str, Any] = {name: _rates([a for a in answers if a["set"] == name]) for name in SETS}
    summary["time_s"] = round(time.perf_counter() - start, 2)
    return summary, answers


def _rates(answers: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(answers)
    out: dict[str, Any] = {"prompts": n, "refused": sum(a["refused"] for a in answers)}
    out["refusal_rate"] = out["refused"] / n if n else None
    if answers and "judge_refused" in answers[0]:
        out["judge_refusal_rate"] = sum(a["judge_refused"] for a in answers) / n
    categories = sorted({a["category"] for a in answers})
    out["by_category"] = {
        c: sum(a["refused"] for a in answers if a["category"] == c) / sum(a["category"] == c for a in answers)
        for c in categories
    }
    return out


def compare_probes(base: dict[str, Any], tuned: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Change of each refusal rate in percentage points, and whether the harmful set's drop passes ``threshold``.

    The warning reads the judge's rate when there is one (a classifier reads more than an opening), else the
    rule's."""
    change: dict[str, Any] = {}
    for name in SETS:
        for key in ("refusal_rate", "judge_refusal_rate"):
            b, t = base.get(name, {}).get(key), tuned.get(name, {}).get(key)
            if b is not None and t is not None:
                change.setdefault(name, {})[key.replace("rate", "points")] = round(100 * (t - b), 2)
    harmful = change.get("harmful", {})
    drop = -harmful.get("judge_refusal_points", harmful.get("refusal_points", 0.0))
    return {"change": change, "threshold_points": threshold, "drop_points": drop, "warning": drop > threshold}
