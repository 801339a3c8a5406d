"""What tuning cost, next to what it gained: standard benchmarks (lm-eval) and the safety probe, base and tuned.

`plan_cost` loads everything that can fail (benchmark tasks, the safety judge) before the run folder exists;
`measure_cost` scores one model; `cost_metrics` puts base and tuned side by side for ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmtune.config import EvalConfig
from lmtune.evaluate.safety import SETTINGS, Judge, compare_probes, probe_prompts, refusal_label, run_probe


@dataclass
class CostPlan:
    """What will be measured on each model: benchmark tasks (loaded), safety prompts and judge (or None)."""

    benchmarks: Any = None
    skipped: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, list[dict[str, str]]] | None = None
    judge: Judge | None = None

    @property
    def empty(self) -> bool:
        return not (self.benchmarks and self.benchmarks.names) and self.prompts is None

    def describe(self) -> str:
        """What is measured, for the progress line: ``2 benchmark task(s), the safety probe (180 prompts)``."""
        parts = [f"{len(self.benchmarks.names)} benchmark task(s)"] if self.benchmarks and self.benchmarks.names else []
        if self.prompts is not None:
            parts.append(f"the safety probe ({sum(len(p) for p in self.prompts.values())} prompts)")
        return ", ".join(parts)


def plan_cost(e: EvalConfig, chat_model: bool | None = None) -> CostPlan:
    """Load the benchmark tasks and the safety judge now, so what cannot load stops the run before it starts.

    ``chat_model`` (the tokenizer has a chat template) decides ``eval.safety: null``; None leaves the probe
    for `with_safety` to decide once the tokenizer is loaded.
    """
    plan = CostPlan()
    if e.benchmarks:
        from lmtune.extras import require

        require("benchmarks", what="eval.benchmarks")
        from lmtune.evaluate.benchmarks import load_benchmarks

        plan.benchmarks = load_benchmarks(e.benchmarks, offline=e.benchmarks_offline)
        # the reason without the key and task it would name as an error: the line that shows it names them
        plan.skipped = {k: v.removeprefix(f"eval.benchmarks: {k}: ") for k, v in plan.benchmarks.skipped.items()}
    if e.safety is not False and e.safety_judge:
        plan.judge = load_judge(e.safety_judge, e.safety_judge_label)
    return with_safety(plan, e, chat_model) if chat_model is not None else plan


def with_safety(plan: CostPlan, e: EvalConfig, chat_model: bool) -> CostPlan:
    """The probe's prompts when it is on: ``eval.safety``, or by default for chat models."""
    if e.safety or (e.safety is None and chat_model):
        plan.prompts = probe_prompts(e.safety_limit)
    else:
        plan.judge = None
    return plan


def load_judge(name: str, label: str | None) -> Judge:
    """The refusal classifier, through lmtune's one door for weights (a local folder needs no network)."""
    from lmtune.evaluate.reward import load_reward_model

    model, tokenizer = load_reward_model(name, argument="eval.safety_judge")
    return Judge(model, tokenizer, refusal_label(model, label, name), name)


def measure_cost(model: Any, tokenizer: Any, ask: Any, plan: CostPlan, e: EvalConfig) -> tuple[dict, list[dict]]:
    """Benchmark scores and the safety probe's summary for one model, and the probe's answers."""
    import time

    out: dict[str, Any] = {}
    answers: list[dict[str, Any]] = []
    if plan.benchmarks is not None and plan.benchmarks.names:
        from lmtune.evaluate.benchmarks import run_benchmarks

        start = time.perf_counter()
        out["benchmarks"] = run_benchmarks(model, tokenizer, plan.benchmarks, e.benchmark_limit, e.batch_size)
        out["benchmarks_time_s"] = round(time.perf_counter() - start, 2)
    if plan.prompts is not None:
        out["safety"], answers = run_probe(model, tokenizer, ask, plan.prompts, e.safety_max_new_tokens,
                                           e.batch_size, plan.judge)  # fmt: skip
    return out, answers


def cost_metrics(base: dict[str, Any] | None, tuned: dict[str, Any], plan: CostPlan, e: EvalConfig) -> dict:
    """``metrics.json``'s ``benchmarks`` and ``safety`` sections: each model's numbers, the change, the settings."""
    from lmtune.evaluate.benchmarks import benchmark_settings, compare_benchmarks

    base = base or {}
    out: dict[str, Any] = {}
    if plan.benchmarks is not None or plan.skipped:
        b, t = base.get("benchmarks"), tuned.get("benchmarks")
        out["benchmarks"] = {
            "base": b,
            "finetuned": t,
            "change": compare_benchmarks(b, t) if b and t else None,
            "skipped": plan.skipped,
            "time_s": {"base": base.get("benchmarks_time_s"), "finetuned": tuned.get("benchmarks_time_s")},
            "settings": benchmark_settings(e.benchmark_limit),
        }
    if plan.prompts is not None and tuned.get("safety"):
        b, t = base.get("safety"), tuned["safety"]
        out["safety"] = {
            "base": b,
            "finetuned": t,
            **(compare_probes(b, t, e.safety_threshold) if b else {"threshold_points": e.safety_threshold}),
            "judge": plan.judge.name if plan.judge else None,
            "time_s": {"base": (b or {}).get("time_s"), "finetuned": t.get("time_s")},
            "settings": {**SETTINGS, "max_new_tokens": e.safety_max_new_tokens, "limit_per_set": e.safety_limit},
        }
    return out
