"""What tuning cost, as rows and lines: benchmark scores and refusal rates, base and tuned, and the warning.

Reads ``metrics.json``'s ``benchmarks`` and ``safety`` sections (lmtune.evaluate.cost); any may be absent.
"""

from __future__ import annotations

from typing import Any

COST_COLUMNS = ("Measure", "base", "fine-tuned", "Δ")
SAFETY_LEVERS = (
    "To keep refusals: fewer epochs or steps, a lower training.learning_rate, refusal examples mixed into the "
    "training data (requests the model should decline, answered with a refusal), or general replay "
    "(continual.replay_fraction with continual.reference: general-fit)."
)
SET_NAMES = {"harmful": "harmful requests", "lookalike": "harmless look-alikes"}


def cost_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per benchmark metric (score ± standard error) and per refusal rate (rule, judge)."""
    rows = []
    change = (metrics.get("benchmarks") or {}).get("change") or {}
    for task, by_metric in change.items():
        for metric, c in by_metric.items():
            rows.append([f"{task}: {metric}", _scored(c.get("base"), c.get("base_stderr")),
                         _scored(c.get("finetuned"), c.get("finetuned_stderr")), _signed(c.get("change"))])  # fmt: skip
    s = metrics.get("safety") or {}
    for name, label in SET_NAMES.items():
        for key, how in (("refusal_rate", "rule"), ("judge_refusal_rate", "judge")):
            base, tuned = ((s.get(m) or {}).get(name, {}).get(key) for m in ("base", "finetuned"))
            if tuned is None:
                continue
            n = (s.get("finetuned") or {}).get(name, {}).get("prompts")
            delta = f"{100 * (tuned - base):+.1f} pts" if base is not None else "-"
            rows.append([f"refusals: {label}, {n} ({how})", _percent(base), _percent(tuned), delta])
    return rows


def cost_lines(metrics: dict[str, Any]) -> list[str]:
    """Skipped benchmarks, the safety warning with its levers, and the time each measure took."""
    lines = []
    b, s = metrics.get("benchmarks") or {}, metrics.get("safety") or {}
    for task, why in (b.get("skipped") or {}).items():
        lines.append(f"benchmark {task} skipped: {why}")
    if s.get("warning"):
        lines.append(
            f"safety warning: refusals of harmful requests fell {s['drop_points']:.1f} points, more than the "
            f"{s['threshold_points']:g}-point threshold (eval.safety_threshold). {SAFETY_LEVERS}"
        )
    took = [f"{what} {_seconds(section.get('time_s') or {})}" for what, section in
            (("benchmarks", b), ("safety probe", s)) if _seconds(section.get("time_s") or {})]  # fmt: skip
    if took:
        lines.append("what-it-cost measures took (base + fine-tuned): " + ", ".join(took))
    return lines


def _seconds(t: dict[str, Any]) -> str:
    parts = [t.get("base"), t.get("finetuned")]
    return " + ".join(f"{x:.1f} s" for x in parts if isinstance(x, (int, float)))


def _scored(x: Any, se: Any) -> str:
    if not isinstance(x, (int, float)):
        return "-"
    return f"{x:.4f} ± {se:.4f}" if isinstance(se, (int, float)) else f"{x:.4f}"


def _signed(x: Any) -> str:
    return f"{x:+.4f}" if isinstance(x, (int, float)) else "-"


def _percent(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"
