"""The sweep's two figures as PNG bytes (matplotlib's object API, as lmtune's run report draws)."""

from __future__ import annotations

from typing import Any

from lmtune.report.plots import BETTER, PALETTE, TUNED, WORSE, _figure, _png


def objective_history(trials: list[dict[str, Any]], objective: str, direction: str) -> bytes | None:
    """Each finished trial's value by trial number, pruned ones marked, and the best so far."""
    done = [t for t in trials if t["value"] is not None and t["state"] in ("COMPLETE", "PRUNED")]
    if not done:
        return None
    fig, axes = _figure()
    ax = axes[0, 0]
    for state, color, marker in (("COMPLETE", TUNED, "o"), ("PRUNED", WORSE, "x")):
        pts = [(t["number"], t["value"]) for t in done if t["state"] == state]
        if pts:
            ax.scatter(*zip(*pts, strict=True), color=color, marker=marker, s=28, label=state.lower(), zorder=3)
    best, xs, ys = None, [], []
    pick = min if direction == "minimize" else max
    for t in sorted(done, key=lambda t: t["number"]):
        if t["state"] == "COMPLETE":
            best = t["value"] if best is None else pick(best, t["value"])
        if best is not None:
            xs.append(t["number"])
            ys.append(best)
    ax.step(xs, ys, where="post", color=BETTER, lw=1.6, label="best so far")
    ax.set(xlabel="trial", ylabel=objective)
    ax.set_xticks(sorted({t["number"] for t in done}))
    ax.set_title(f"{objective} over trials ({direction})", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def importances(values: dict[str, float]) -> bytes | None:
    """Optuna's parameter importances as horizontal bars, the most important on top."""
    if not values:
        return None
    names = list(values)[::-1]
    fig, axes = _figure(height=0.5 + 0.45 * len(names))
    ax = axes[0, 0]
    ax.barh(names, [values[n] for n in names], color=PALETTE[0])
    ax.set(xlabel="importance (share of the objective's variation)")
    ax.set_title("Parameter importances", fontsize=10)
    return _png(fig)
