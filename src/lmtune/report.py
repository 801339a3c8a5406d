"""metrics.json -> the seed-style comparison table, as terminal text and Markdown."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "Model", "PPL", "BLEU", "1-gram", "2-gram", "3-gram", "4-gram",
    "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "Time (s)",
)  # fmt: skip


def table_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per evaluated model (base, finetuned) with the seed tutorial's columns."""
    rows = []
    for name in ("base", "finetuned"):
        if name in metrics:
            time_s = metrics.get("train_time_s") if name == "finetuned" else None
            rows.append([name, *_cells(metrics[name], time_s)])
    tasks = sorted({t for name in ("base", "finetuned") for t in metrics.get(name, {}).get("by_task", {})})
    for task in tasks:  # one pair of rows per task of a mixture
        for name in ("base", "finetuned"):
            if task in metrics.get(name, {}).get("by_task", {}):
                rows.append([f"{name} [{task}]", *_cells(metrics[name]["by_task"][task], None)])
    return rows


def _cells(m: dict[str, Any], time_s: float | None) -> list[str]:
    bleu, rouge = m.get("bleu"), m.get("rouge")
    ppl = f"{m['perplexity']:.3f}" if "perplexity" in m else "-"
    bleu_cells = [f"{bleu['bleu']:.4f}", *(f"{p:.4f}" for p in bleu["precisions"])] if bleu else ["-"] * 5
    rouge_keys = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    rouge_cells = [f"{rouge[k]:.4f}" for k in rouge_keys] if rouge else ["-"] * 4
    return [ppl, *bleu_cells, *rouge_cells, f"{time_s:.1f}" if time_s is not None else "-"]


def forgetting_line(metrics: dict[str, Any]) -> str:
    f = metrics.get("forgetting")
    if not f or "finetuned_perplexity" not in f:
        return ""
    return (
        f"forgetting: perplexity on {f['reference']} {f['base_perplexity']:.3f} -> {f['finetuned_perplexity']:.3f} "
        f"({f['perplexity_increase_percent']:+.1f}%)"
    )


def text_table(metrics: dict[str, Any]) -> str:
    rows = [list(COLUMNS), *table_rows(metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(metrics: dict[str, Any]) -> str:
    rows = [list(COLUMNS), ["---"] * len(COLUMNS), *table_rows(metrics)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def markdown_report(
    metrics: dict[str, Any], predictions: list[dict[str, Any]] | None = None, n_samples: int = 5
) -> str:
    """``report.md``: the table, stopping behaviour, and a few answers side by side."""
    parts = ["# lmtune run report", "", markdown_table(metrics), ""]
    if forgetting_line(metrics):
        parts += [f"- {forgetting_line(metrics)}"]
    run = metrics.get("run", {})
    if run:
        parts += [
            f"- model: `{run.get('model')}`, method: `{run.get('method')}`, "
            f"trainable parameters: {run.get('trainable_params', 0):,} of {run.get('total_params', 0):,} "
            f"({run.get('trainable_percent', 0):.2f}%)",
            f"- training: {run.get('steps')} steps, {metrics.get('train_time_s', 0):.1f} s, "
            f"mean train loss {run.get('train_loss', float('nan')):.4f}",
            f"- held-out set: {run.get('eval_source')}",
        ]
    for name in ("base", "finetuned"):
        gen = metrics.get(name, {}).get("generation")
        if gen:
            parts.append(
                f"- {name}: {gen['stopped_at_eos']:.0%} of {gen['samples']} answers ended with EOS "
                f"(mean {gen['mean_new_tokens']:.1f} new tokens, cap {gen['max_new_tokens']})"
            )
    if predictions:
        parts += ["", "## Sample answers", ""]
        for p in predictions[:n_samples]:
            ref = p["reference"] if isinstance(p["reference"], str) else p["reference"][0]
            parts += [f"**Prompt:** {p['prompt']}", "", f"- reference: {ref}"]
            if "base" in p:
                parts.append(f"- base: {p['base']}")
            parts += [f"- fine-tuned: {p['prediction']}", ""]
    return "\n".join(parts) + "\n"
