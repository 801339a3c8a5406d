"""metrics.json -> the seed-style comparison table, the other metrics, and ``report.md``.

Every key of ``metrics.json`` may be absent (a run without base evaluation, without
reward model, an older run folder): a missing number is shown as ``-``.
"""

from __future__ import annotations

from typing import Any

from lmtune.report.cost import COST_COLUMNS, cost_lines, cost_rows
from lmtune.report.distill import ROW_LABELS, SIZE_COLUMNS, size_lines, size_rows

COLUMNS = (
    "Model", "PPL", "BLEU", "1-gram", "2-gram", "3-gram", "4-gram",
    "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "Time (s)",
)  # fmt: skip

# The metrics besides the seed table: (label, path into one model's metrics)
OTHER_METRICS = (
    ("chrF", "chrf.chrf"),
    ("exact match", "exact_match"),
    ("token F1", "token_f1"),
    ("accuracy", "accuracy"),
    ("macro-F1", "macro_f1"),
    ("reward mean", "reward.mean"),
    ("preference accuracy", "preference.accuracy"),
    ("preference margin (nats)", "preference.margin"),
    ("log p(chosen)", "preference.chosen_logp"),
    ("log p(rejected)", "preference.rejected_logp"),
    ("implicit-reward accuracy", "preference.implicit_accuracy"),
    ("KL from reference (nats)", "kl_from_reference"),
    ("reward model: pair accuracy", "reward_pairs.accuracy"),
    ("reward model: margin", "reward_pairs.margin"),
)
# Sections whose keys the run names (eval.checks, grpo.reward_functions): one row per key.
NAMED_METRICS = (("check", "checks"), ("reward fn", "rewards"))
OTHER_COLUMNS = ("Metric", "base", "fine-tuned", "Δ")
MODELS = ("base", "finetuned")


def value(m: dict[str, Any] | None, path: str) -> float | None:
    """The number at a dotted ``path`` in ``m`` (``"bleu.bleu"``), or None when absent.

    A number met before the path ends is the answer: ``{"chrf": 0.5}`` and
    ``{"chrf": {"chrf": 0.5}}`` both give 0.5 for ``"chrf.chrf"``.
    """
    node: Any = m or {}
    for key in path.split("."):
        if isinstance(node, (int, float)):
            break
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def table_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per evaluated model (base, finetuned; a distill run's teacher, pruned and distilled student) with
    the seed tutorial's columns."""
    rows = []
    for name, label in model_rows(metrics):
        time_s = metrics.get("train_time_s") if name == "finetuned" else None
        rows.append([label, *_cells(metrics[name], time_s)])
    for task in _tasks(metrics):  # one pair of rows per task of a mixture
        for name, label in model_rows(metrics):
            if task in metrics.get(name, {}).get("by_task", {}):
                rows.append([f"{label} [{task}]", *_cells(metrics[name]["by_task"][task], None)])
    return rows


def model_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(key in metrics.json, row label) of each evaluated model, in order."""
    labels = ROW_LABELS if metrics.get("objective") == "distill" else {}
    return [(name, labels.get(name, name)) for name in ("base", "pruned", "finetuned") if name in metrics]


def _tasks(metrics: dict[str, Any]) -> list[str]:
    return sorted({t for name in MODELS for t in (metrics.get(name) or {}).get("by_task", {})})


def _cells(m: dict[str, Any], time_s: float | None) -> list[str]:
    precisions = list((m.get("bleu") or {}).get("precisions") or [])[:4]
    precisions += [None] * (4 - len(precisions))
    rouge = [value(m, f"rouge.{k}") for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")]
    scores = [_num(x if isinstance(x, (int, float)) else None) for x in (value(m, "bleu.bleu"), *precisions, *rouge)]
    ppl = value(m, "perplexity")
    return [_num(ppl, ".3f"), *scores, _num(time_s, ".1f")]


def other_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """chrF, exact match, token F1, accuracy, macro-F1, reward mean: base, fine-tuned and the change.

    Only the metrics that either model has; empty when there are none.
    """
    rows = []
    named = [(f"{label}: {key}", f"{section}.{key}") for label, section in NAMED_METRICS
             for key in sorted({k for n in MODELS for k in ((metrics.get(n) or {}).get(section) or {})})]  # fmt: skip
    for label, path in (*OTHER_METRICS, *named):
        base, tuned = (value(metrics.get(name), path) for name in MODELS)
        if base is None and tuned is None:
            continue
        delta = f"{tuned - base:+.4f}" if base is not None and tuned is not None else "-"
        rows.append([label, _num(base), _num(tuned), delta])
    return rows


def other_columns(metrics: dict[str, Any]) -> list[str]:
    """The other metrics' header: base and fine-tuned, or a distill run's teacher and distilled student."""
    if metrics.get("objective") == "distill":
        return ["Metric", ROW_LABELS["base"], ROW_LABELS["finetuned"], "Δ"]
    return list(OTHER_COLUMNS)


def _num(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def forgetting_line(metrics: dict[str, Any]) -> str:
    f = metrics.get("forgetting") or {}
    keys = ("base_perplexity", "finetuned_perplexity", "perplexity_increase_percent")
    if any(value(f, k) is None for k in keys):
        return ""
    pruned = f" (pruned, before distillation: {f['pruned_perplexity']:.3f})" if value(f, "pruned_perplexity") else ""
    line = (
        f"forgetting: perplexity on {f['reference']} {f['base_perplexity']:.3f} -> {f['finetuned_perplexity']:.3f} "
        f"({f['perplexity_increase_percent']:+.1f}%){pruned}"
    )
    threshold = f.get("threshold_percent")
    if threshold is not None and f["perplexity_increase_percent"] > threshold:
        levers = DISTILL_LEVERS if metrics.get("objective") == "distill" else FORGETTING_LEVERS
        line += f" — above the {threshold:g}% threshold (eval.forgetting_threshold). {levers}"
    return line


FORGETTING_LEVERS = (
    "To keep more general ability: a lower training.learning_rate or fewer steps, fewer adapted modules "
    "(lora.target_modules), general data mixed in (continual.replay_fraction with continual.reference: "
    "general-fit), or EWC (continual.ewc_weight)."
)


DISTILL_LEVERS = (
    "The student learned the task alone: to keep more general ability, drop fewer layers (distill.drop_layers) or "
    "distil on general text as well (a mixture in data.train: the teacher's distributions on it teach the student)."
)


def reward_lines(metrics: dict[str, Any]) -> list[str]:
    """The reward model's scores per model, and how often the fine-tuned answer won."""
    lines = []
    for name in MODELS:
        r = (metrics.get(name) or {}).get("reward")
        if isinstance(r, dict) and value(r, "mean") is not None:
            q = [value(r, f"quantiles.p{p}") for p in (10, 50, 90)]
            spread = f", p10/p50/p90 {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}" if None not in q else ""
            lines.append(
                f"reward ({r.get('model', 'reward model')}), {name}: mean {r['mean']:.3f} ± {value(r, 'std') or 0:.3f}"
                f"{spread} over {r.get('n', len(r.get('scores', [])))} answers"
            )
    c = metrics.get("reward_comparison")
    if isinstance(c, dict) and c.get("pairs"):
        lines.append(
            f"reward per prompt: fine-tuned higher in {c.get('finetuned_higher') or 0:.0%} of {c['pairs']} pairs, "
            f"base higher in {c.get('base_higher') or 0:.0%}, ties {c.get('ties') or 0:.0%}"
        )
    return lines


def early_stopping_line(run: dict[str, Any]) -> str:
    """Which checkpoint the final weights are, and whether training stopped before its planned end."""
    if not run.get("best_checkpoint") and not run.get("stopped_early"):
        return ""
    stop = f"stopped early after {run.get('steps')} steps" if run.get("stopped_early") else "ran all its steps"
    best = ""
    if run.get("best_checkpoint"):
        loss = f", eval loss {run['best_eval_loss']:.4f}" if value(run, "best_eval_loss") is not None else ""
        best = f"; final weights from the best checkpoint {run['best_checkpoint']} (step {run.get('best_step')}{loss})"
    return f"early stopping: training {stop}{best}"


def run_lines(metrics: dict[str, Any]) -> list[str]:
    """Model, method, parameters, training and held-out set of a run, one fact per line."""
    run = metrics.get("run") or {}
    if not run:
        return []
    trainable, total = (int(value(run, k) or 0) for k in ("trainable_params", "total_params"))
    loss = value(run, "train_loss")
    lines = [
        f"model: `{run.get('model')}`, method: `{run.get('method')}`, "
        f"trainable parameters: {trainable:,} of {total:,} ({value(run, 'trainable_percent') or 0:.2f}%)",
        f"training: {run.get('steps')} steps, {value(metrics, 'train_time_s') or 0:.1f} s, "
        f"mean train loss {(loss if loss is not None else float('nan')):.4f}",
        f"held-out set: {run.get('eval_source')}",
    ]
    if line := held_out_line(metrics):
        lines.append(line)
    phases = run.get("phases_s") or {}
    if phases:  # where the run's time went
        lines.append("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in phases.items()))
    return lines + ([early_stopping_line(run)] if early_stopping_line(run) else [])


def held_out_line(metrics: dict[str, Any]) -> str:
    """How many held-out examples were scored, and how many had to be cut to fit (none is ever dropped)."""
    run = metrics.get("run") or {}
    cut = run.get("held_out_cut") or {}
    if not cut.get("cut"):
        return ""
    return (
        f"held-out examples: all {run.get('eval_examples')} scored; {cut['cut']} cut from the middle of the prompt "
        f"to fit data.max_length (mean {cut['tokens_cut'] / cut['cut']:.0f}, max {cut['max_tokens_cut']} tokens)"
    )


def generation_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for name in MODELS:
        gen = (metrics.get(name) or {}).get("generation") or {}
        if all(value(gen, k) is not None for k in ("stopped_at_eos", "samples", "mean_new_tokens", "max_new_tokens")):
            lines.append(
                f"{name}: {gen['stopped_at_eos']:.0%} of {gen['samples']} answers ended with EOS "
                f"(mean {gen['mean_new_tokens']:.1f} new tokens, cap {gen['max_new_tokens']})"
            )
    return lines


def privacy_line(metrics: dict[str, Any]) -> str:
    """What a private run's guarantee is: epsilon spent for its delta, and the settings that bought it."""
    p = metrics.get("privacy")
    if not p:
        return ""
    return (
        f"privacy: (ε = {p['epsilon']:.2f}, δ = {p['delta']:g})-differentially private per training example "
        f"(DP-SGD: noise multiplier {p['noise_multiplier']:.3f}, clip {p['max_grad_norm']:g}, {p['steps']} steps "
        f"at sample rate {p['sample_rate']:.4f}, {p['accountant']} accountant)"
    )


def text_table(metrics: dict[str, Any]) -> str:
    """The seed table; for preference / reward / GRPO runs also the objective's own measures under it; then
    what tuning cost (benchmarks, refusal rates) and its notes."""
    parts = [aligned([list(COLUMNS), *table_rows(metrics)]), held_out_line(metrics)]
    if metrics.get("objective", "sft") != "sft" and other_rows(metrics):
        parts.append("\n" + aligned([other_columns(metrics), *other_rows(metrics)]))
    if size_rows(metrics):
        parts.append("\nsmaller and faster:\n" + aligned([list(SIZE_COLUMNS), *size_rows(metrics)]))
        parts += size_lines(metrics)
    if cost_rows(metrics):
        parts.append("\nwhat tuning cost:\n" + aligned([list(COST_COLUMNS), *cost_rows(metrics)]))
    return "\n".join(part for part in [*parts, *cost_lines(metrics)] if part)


def aligned(rows: list[list[str]]) -> str:
    """Rows as a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(metrics: dict[str, Any]) -> str:
    return markdown_rows([list(COLUMNS), *table_rows(metrics)])


def markdown_rows(rows: list[list[str]]) -> str:
    """A header row and body rows as a Markdown table (``|`` in cells escaped)."""
    cells = [[c.replace("|", "\\|") for c in r] for r in rows]
    cells.insert(1, ["---"] * len(rows[0]))
    return "\n".join("| " + " | ".join(r) + " |" for r in cells)


def markdown_report(
    metrics: dict[str, Any], predictions: list[dict[str, Any]] | None = None, n_samples: int = 5
) -> str:
    """``report.md``: the tables, stopping behaviour, reward, and a few answers side by side.

    ``predictions`` are the fine-tuned model's rows, each with the base model's answer
    under ``"base"`` when there was a base evaluation.
    """
    parts = ["# lmtune run report", "", markdown_table(metrics), ""]
    for stage in metrics.get("stages", []):
        parts += [f"## Stage {stage.get('stage')}", "", markdown_table(stage), ""]
        parts += [f"- {line}" for line in [forgetting_line(stage), *run_lines(stage)] if line]
        parts.append("")
    if other_rows(metrics):
        parts += ["## Other metrics", "", markdown_rows([other_columns(metrics), *other_rows(metrics)]), ""]
    if size_rows(metrics):
        parts += ["## Smaller and faster", "", markdown_rows([list(SIZE_COLUMNS), *size_rows(metrics)]), ""]
        parts += [*(f"- {line}" for line in size_lines(metrics)), ""]
    if cost_rows(metrics) or cost_lines(metrics):
        parts += ["## What tuning cost", ""]
        parts += [markdown_rows([list(COST_COLUMNS), *cost_rows(metrics)]), ""] if cost_rows(metrics) else []
        parts += [*(f"- {line}" for line in cost_lines(metrics)), ""]
    lines = [privacy_line(metrics), forgetting_line(metrics), *run_lines(metrics), *generation_lines(metrics),
             *reward_lines(metrics)]  # fmt: skip
    parts += [f"- {line}" for line in lines if line]
    if predictions and n_samples:
        parts += ["", "## Sample answers", ""]
        for p in predictions[:n_samples]:
            parts += [f"**Prompt:** {p.get('prompt')}", "", f"- reference: {first_reference(p)}"]
            if "base" in p:
                parts.append(f"- base: {p['base']}")
            parts += [f"- fine-tuned: {p.get('prediction')}", ""]
    return "\n".join(parts) + "\n"


def first_reference(row: dict[str, Any]) -> str:
    ref = row.get("reference", "")
    return ref if isinstance(ref, str) else (ref[0] if ref else "")
