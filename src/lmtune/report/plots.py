"""The report's figures as PNG bytes; each returns None when its data is absent.

matplotlib's object API (``Figure`` + the Agg canvas) is used, not pyplot: no global
figure state, nothing to close, and no GUI backend is ever chosen.
"""

from __future__ import annotations

import io
import math
from typing import Any

from lmtune.report.tables import value

BASE, TUNED = "#8a94a6", "#2f6fde"
BETTER, WORSE = "#2e9e5b", "#d9534f"
PALETTE = ("#2f6fde", "#e8833a", "#2e9e5b", "#c0392b", "#8e44ad", "#7f8c8d", "#d4ac0d", "#16a085")
DPI = 100
Series = list[tuple[str, list[dict[str, Any]]]]  # (label, training-log rows)

# 0-1 metrics whose fine-tuned minus base change is drawn; perplexity is added as a relative change
DELTA_METRICS = (
    ("BLEU", "bleu.bleu"), ("ROUGE-1", "rouge.rouge1"), ("ROUGE-2", "rouge.rouge2"), ("ROUGE-L", "rouge.rougeL"),
    ("chrF", "chrf.chrf"), ("exact match", "exact_match"), ("token F1", "token_f1"),
    ("accuracy", "accuracy"), ("macro-F1", "macro_f1"),
)  # fmt: skip


def _figure(width: float = 5.2, height: float = 3.2, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, color="#e3e6ea", lw=0.8)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    return fig, axes


def _png(fig: Any) -> bytes:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "step":  # steps are whole numbers; a few logged steps are the ticks themselves
            steps = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
            if len(steps) > 6:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            else:
                ax.set_xticks(steps)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _points(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if _finite(r.get(key)) and _finite(r.get("step"))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _line(ax: Any, xs: list[float], ys: list[float], **kw: Any) -> None:
    ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, ms=3, lw=1.6, **kw)


def loss_curves(
    series: Series, best_step: int | None = None, title: str = "Training and validation loss"
) -> bytes | None:
    """Train loss (solid) and eval loss (dashed) against step; one colour per labelled series."""
    fig, axes = _figure()
    ax, drawn = axes[0, 0], False
    for i, (label, rows) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        name = f"{label} " if label else ""
        for key, what, style in (("loss", "train", "-"), ("eval_loss", "eval", "--")):
            xs, ys = _points(rows, key)
            if xs:
                c = PALETTE[1] if len(series) == 1 and what == "eval" else color  # one run: two colours
                _line(ax, xs, ys, color=c, ls=style, label=f"{name}{what} loss")
                drawn = True
    if not drawn:
        return None
    if not any(_points(rows, "eval_loss")[0] for _, rows in series):
        title = title.replace("Training and validation loss", "Training loss")
    if best_step is not None:
        ax.axvline(best_step, color="#555", ls=":", lw=1.2, label=f"best checkpoint (step {best_step})")
    ax.set(xlabel="step", ylabel="loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False, handlelength=3.5)
    return _png(fig)


def note(text: str) -> bytes:
    """A small figure that only says ``text`` (where a plot is expected but there is nothing to draw)."""
    fig, axes = _figure(height=1.6)
    axes[0, 0].set_axis_off()
    axes[0, 0].text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="#616e7c")
    return _png(fig)


def lr_curve(series: Series) -> bytes | None:
    """The learning-rate schedule as logged."""
    fig, axes = _figure(height=2.6)
    ax, drawn = axes[0, 0], False
    for i, (label, rows) in enumerate(series):
        xs, ys = _points(rows, "learning_rate")
        if xs:
            _line(ax, xs, ys, color=PALETTE[i % len(PALETTE)], label=label or None)
            drawn = True
    if not drawn:
        return None
    ax.set(xlabel="step", ylabel="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_title("Learning rate", fontsize=10)
    if any(label for label, _ in series):
        ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def metric_deltas(base: dict[str, Any], tuned: dict[str, Any]) -> bytes | None:
    """Fine-tuned minus base for the 0-1 metrics, perplexity as relative change; green is better."""
    bars = []
    for label, path in DELTA_METRICS:
        b, t = value(base, path), value(tuned, path)
        if b is not None and t is not None:
            bars.append((label, t - b, f"{t - b:+.3f}", t >= b))
    b, t = value(base, "perplexity"), value(tuned, "perplexity")
    if b and t is not None:
        rel = t / b - 1
        bars.append(("PPL (relative)", rel, f"{rel:+.1%}", t <= b))
    if not bars:
        return None
    fig, axes = _figure(height=0.9 + 0.32 * len(bars))
    ax = axes[0, 0]
    labels = [b[0] for b in bars][::-1]
    deltas = [b[1] for b in bars][::-1]
    ax.barh(labels, deltas, color=[BETTER if b[3] else WORSE for b in bars][::-1], height=0.6)
    ax.axvline(0, color="#333", lw=0.8)
    span = max(abs(d) for d in deltas) or 1.0
    ax.set_xlim(min(0, min(deltas)) - 0.3 * span, max(0, max(deltas)) + 0.3 * span)
    for y, (d, text) in enumerate(zip(deltas, [b[2] for b in bars][::-1], strict=True)):
        ax.annotate(text, (d, y), xytext=(3 if d >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if d >= 0 else "right", va="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("fine-tuned − base", fontsize=8)
    ax.set_title("Change after fine-tuning (green: better)", fontsize=10)
    ax.grid(axis="y", visible=False)
    return _png(fig)


def forgetting(f: dict[str, Any]) -> bytes | None:
    """General-set perplexity before and after fine-tuning (lower is better)."""
    b, t = value(f, "base_perplexity"), value(f, "finetuned_perplexity")
    if b is None or t is None:
        return None
    fig, axes = _figure(width=3.6, height=2.8)
    ax = axes[0, 0]
    ax.bar(["base", "fine-tuned"], [b, t], color=[BASE, WORSE if t > b else BETTER], width=0.55)
    for x, v in enumerate((b, t)):
        ax.annotate(f"{v:.3f}", (x, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.set_ylim(0, max(b, t) * 1.18)
    ax.set_ylabel("perplexity", fontsize=8)
    ax.set_title(f"Forgetting: general-set PPL {t / b - 1:+.1%}", fontsize=10)
    ax.grid(axis="x", visible=False)
    return _png(fig)


def reward_histograms(base: list[float], tuned: list[float]) -> bytes | None:
    """The reward model's scores of base and fine-tuned answers, on shared bins."""
    base, tuned = [s for s in base if _finite(s)], [s for s in tuned if _finite(s)]
    if not base and not tuned:
        return None
    import numpy as np

    edges = np.histogram_bin_edges(base + tuned, bins=min(20, max(5, len(base + tuned) // 4)))
    fig, axes = _figure()
    ax = axes[0, 0]
    for scores, name, color in ((base, "base", BASE), (tuned, "fine-tuned", TUNED)):
        if scores:
            mean = sum(scores) / len(scores)
            ax.hist(scores, bins=edges, color=color, alpha=0.5, ec=color, label=f"{name} (mean {mean:.3f})")
            ax.axvline(mean, color=color, ls="--", lw=1.2)
    ax.set(xlabel="reward score", ylabel="answers")
    ax.set_title("Reward score distribution", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def generation_curves(series: Series) -> bytes | None:
    """The in-training generation metrics (``gen_*`` log keys) against step: 0-1 ones together, others apart."""
    return logged_curves(series, ("gen_",), "Generation metrics during training")


# TRL's logged preference / reward measures: rewards/chosen, rewards/margins, logps/*, GRPO's reward and kl.
TRL_PREFIXES = ("rewards/", "logps/", "reward", "kl")


def trl_curves(series: Series) -> bytes | None:
    """What TRL's trainers log besides the loss (implicit rewards, margins, accuracies, log-probs, KL)."""
    return logged_curves(series, TRL_PREFIXES, "Preference and reward measures during training")


def logged_curves(series: Series, prefixes: tuple[str, ...], title: str) -> bytes | None:
    """Logged keys starting with ``prefixes`` against step: 0-1 ones together, others apart."""
    keys = sorted({k for _, rows in series for r in rows for k in r if k.startswith(prefixes) and _finite(r[k])})
    keys = [k for k in keys if not k.endswith("/std")]
    if not keys:
        return None
    unit = [k for k in keys if all(0 <= r[k] <= 1 for _, rows in series for r in rows if _finite(r.get(k)))]
    groups = [g for g in (unit, [k for k in keys if k not in unit]) if g]
    fig, axes = _figure(height=3.0 * len(groups), rows=len(groups))
    for ax, group in zip(axes[:, 0], groups, strict=True):
        for i, key in enumerate(group):
            for j, (label, rows) in enumerate(series):
                xs, ys = _points(rows, key)
                if xs:
                    name = key.removeprefix("gen_") + (f" [{label}]" if label else "")
                    _line(ax, xs, ys, color=PALETTE[(i * len(series) + j) % len(PALETTE)], label=name)
        ax.set(xlabel="step", ylabel="share" if group is unit else "value")
        ax.legend(fontsize=7, frameon=False)
    axes[0, 0].set_title(title, fontsize=10)
    return _png(fig)
