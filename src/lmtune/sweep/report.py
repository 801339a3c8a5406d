"""The sweep's outputs: sweep.json (every trial), best.yaml, the table, sweep.md and sweep.html.

Written after every trial, from the storage, so they tell the whole study whichever process wrote last.
"""

from __future__ import annotations

import math
import warnings
from html import escape
from pathlib import Path
from typing import Any

from lmtune.config.sweep import direction_of
from lmtune.files import atomic_write, atomic_write_json, atomic_write_text
from lmtune.report.page import CSP, CSS, _table, img
from lmtune.report.tables import aligned
from lmtune.sweep import plots
from lmtune.sweep.storage import shown_url
from lmtune.sweep.study import ERROR, FOLDER, NOT_RUN, Sweep, best_trial, write_best_config

SWEEP_JSON = "sweep.json"
FIGURES = (("sweep_objective.png", "Objective over trials"), ("sweep_importance.png", "Parameter importances"))


def write_outputs(sweep: Sweep, study: Any) -> dict[str, Any]:
    """Every output file of the sweep folder, from the study as the storage holds it now; returns sweep.json."""
    summary = sweep_summary(sweep, study)
    write_best_config(sweep, study)
    pngs = [
        plots.objective_history(summary["trials"], sweep.objective, summary["direction"]),
        plots.importances(summary["importances"]),
    ]
    for (name, _), png in zip(FIGURES, pngs, strict=True):
        if png:
            atomic_write(sweep.folder / name, lambda f, png=png: f.write(png))
    atomic_write_text(sweep.folder / "sweep.md", markdown(summary, pngs))
    atomic_write_text(sweep.folder / "sweep.html", html(summary, pngs))
    atomic_write_json(sweep.folder / SWEEP_JSON, summary)  # last: its presence marks the folder a sweep
    return summary


def sweep_summary(sweep: Sweep, study: Any) -> dict[str, Any]:
    trials = [trial_entry(t) for t in study.get_trials(deepcopy=False)]
    best = best_trial(study)
    return {
        "study": study.study_name,
        "storage": shown_url(sweep.storage_url),
        "objective": sweep.objective,
        "direction": direction_of(sweep.cfg.sweep),
        "trials_requested": sweep.trials,
        "trials_finished": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
        "space": sweep.cfg.sweep.space,
        "best": None
        if best is None
        else {"number": best.number, "value": best.value, "params": best.params, "config": "best.yaml"},
        "importances": param_importances(study),
        "trials": trials,
    }


def trial_entry(t: Any) -> dict[str, Any]:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
    return {
        "number": t.number,
        "state": "NOT RUN" if t.user_attrs.get(NOT_RUN) else t.state.name,
        "value": t.value if t.value is not None and math.isfinite(t.value) else None,
        "params": t.params,
        "seconds": round(seconds, 1) if seconds is not None and t.datetime_start else None,
        "folder": t.user_attrs.get(FOLDER),
        "intermediate_eval_loss": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "retry_of": t.system_attrs.get("failed_trial"),
        "error": t.user_attrs.get(ERROR),
    }


def param_importances(study: Any) -> dict[str, float]:
    """Optuna's importances (PED-ANOVA) over the complete trials; empty below two of them."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # "importances will be equal" when the values tie: the figure shows it
            warnings.simplefilter("ignore", UserWarning)
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every complete trial drew the same values: nothing to attribute
        return {}


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Header + one row per trial that ran (number, state, value, each parameter, seconds)."""
    keys = list(summary["space"])
    rows = [["trial", "state", summary["objective"], *keys, "time (s)"]]
    for t in summary["trials"]:
        if t["state"] == "NOT RUN":
            continue
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        params = [_fmt(t["params"].get(k)) for k in keys]
        rows.append([str(t["number"]), t["state"].lower(), value, *params, _fmt(t["seconds"])])
    return rows


def text_table(summary: dict[str, Any]) -> str:
    lines = [aligned(table_rows(summary))]
    if best := summary["best"]:
        lines.append(f"best: trial {best['number']}, {summary['objective']} = {best['value']:.4f}")
    return "\n".join(lines)


def markdown(summary: dict[str, Any], pngs: list[bytes | None]) -> str:
    rows = table_rows(summary)
    md = [
        f"# Sweep `{summary['study']}`",
        "",
        f"Objective `{summary['objective']}` ({summary['direction']}); {summary['trials_finished']} of "
        f"{summary['trials_requested']} trials finished; storage `{summary['storage']}`.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(r) + " |" for r in rows[1:]),
        "",
    ]
    if best := summary["best"]:
        md += [f"Best: trial {best['number']}, {best['value']:.4f}; its config is `best.yaml` "
               "(`lmtune train best.yaml`).", ""]  # fmt: skip
    if summary["importances"]:
        md += ["| parameter | importance |", "|---|---|"]
        md += [f"| {k} | {v:.3f} |" for k, v in summary["importances"].items()] + [""]
    md += [f"![{alt}]({name})" for (name, alt), png in zip(FIGURES, pngs, strict=True) if png]
    return "\n".join(md) + "\n"


def html(summary: dict[str, Any], pngs: list[bytes | None]) -> str:
    rows = table_rows(summary)
    best = summary["best"]
    figures = "".join(
        f"<figure>{img(png, alt)}<figcaption>{escape(alt)}</figcaption></figure>"
        for (_, alt), png in zip(FIGURES, pngs, strict=True)
        if png
    )
    body = [
        f"<header><h1>lmtune sweep</h1><p class='sub'>{escape(summary['study'])} · {escape(summary['storage'])}</p>",
        f"<p>Objective <b>{escape(summary['objective'])}</b> ({summary['direction']}); "
        f"{summary['trials_finished']} of {summary['trials_requested']} trials finished.</p></header>",
        "<section id='trials'><h2>Trials</h2>" + _table(rows[0], rows[1:]) + "</section>",
        f"<p>Best: trial {best['number']}, {best['value']:.4f} — <code>best.yaml</code></p>" if best else "",
        f"<section id='figures'><h2>Figures</h2><div class='grid'>{figures}</div></section>" if figures else "",
    ]
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>lmtune sweep: {escape(summary['study'])}</title><style>{CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(b for b in body if b) + "\n</main></body></html>\n"
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def sweep_json(folder: Path) -> Path:
    return folder / SWEEP_JSON
