"""A distilled student against its teacher: layers, size and generation speed, as rows and lines.

Reads ``metrics.json``'s ``distill`` section (``lmtune.objectives.distill``); absent for other runs.  The pruned
student before distillation has the distilled one's architecture, so one student row holds both's size and speed.
"""

from __future__ import annotations

from typing import Any

SIZE_COLUMNS = ("Model", "Layers", "Parameters", "Weights (MB)", "Tokens/s", "First token (ms)", "Speed-up")
ROW_LABELS = {"base": "teacher", "pruned": "pruned", "finetuned": "distilled"}
"""The rows of a distill run: the teacher is its base, the distilled student its fine-tuned model."""


def size_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Teacher and student: layers, parameters, weight megabytes, greedy tokens/s, time to first token."""
    d = metrics.get("distill") or {}
    rows = []
    for name, layers in (("teacher", d.get("layers")), ("student", d.get("kept"))):
        m = d.get(name)
        if not isinstance(m, dict):
            continue
        speedup = d.get("speedup") if name == "student" else 1.0
        rows.append([
            name if name == "teacher" else "student (pruned, distilled)", _int(layers), _int(m.get("params")),
            _num(_mb(m.get("weight_bytes")), ".1f"), _num(m.get("tokens_per_s"), ".1f"),
            _num(_ms(m.get("ttft_s")), ".1f"), _num(speedup, ".2f", "x"),
        ])  # fmt: skip
    return rows


def size_lines(metrics: dict[str, Any]) -> list[str]:
    """Which layers went and why, each layer's score, and how the speed was timed."""
    d = metrics.get("distill") or {}
    if not d.get("dropped"):
        return []
    scores = d.get("scores") or []
    lines = [
        f"pruning: {d.get('layers')} -> {d.get('kept')} layers; dropped {d['dropped']} ({d.get('chosen')}; score: "
        f"{d.get('score')}, on {d.get('scored_rows')} training rows)",
        "layer scores: " + ", ".join(f"{i}: {s:.3f}" for i, s in enumerate(scores)),
    ]
    s = d.get("speed_settings") or {}
    if s:
        lines.append(
            f"speed: greedy generation of {s.get('new_tokens')} tokens for a batch of {s.get('prompts')} held-out "
            f"prompts, in the same process, the models timed in turns ({s.get('statistic')} of {s.get('repeats')})"
        )
    return lines


def _int(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "-"


def _mb(x: Any) -> float | None:
    return x / 1e6 if isinstance(x, (int, float)) else None


def _ms(x: Any) -> float | None:
    return 1000 * x if isinstance(x, (int, float)) else None


def _num(x: Any, spec: str, unit: str = "") -> str:
    return f"{format(x, spec)}{unit}" if isinstance(x, (int, float)) else "-"
