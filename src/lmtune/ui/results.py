"""The Results page: a run folder's before/after table, forgetting, curves and samples; runs compared."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError
from lmtune.report import COLUMNS, forgetting_line, load_run, table_rows, write_reports
from lmtune.report.tables import OTHER_COLUMNS, first_reference, other_rows


def run_results(folder: Path) -> dict[str, Any]:
    """Everything the Results page shows of one run, read from its folder as ``lmtune report`` reads it."""
    from lmtune.report import plots, side_by_side

    run = load_run(folder)
    m = run.metrics
    samples = [
        {"prompt": r.get("prompt"), "base": r.get("base"), "finetuned": r.get("prediction"),
         "reference": first_reference(r)}
        for r in side_by_side(run)[: run.report_samples()]
    ] if run.base or run.finetuned else []  # fmt: skip
    return {
        "name": run.name,
        "finished": bool(m),
        "columns": COLUMNS,
        "rows": table_rows(m),
        "other_columns": OTHER_COLUMNS,
        "other_rows": other_rows(m),
        "forgetting": forgetting_line(m),
        "forgetting_png": _data_uri(plots.forgetting(m.get("forgetting") or {})),
        "curves_png": _data_uri(plots.loss_curves(run.series())),
        "samples": samples,
        "has_report": (folder / "report.html").is_file() or bool(m),
    }


def report_html(folder: Path) -> str:
    """The run's report.html; written first (as ``lmtune report`` does) when a finished run lacks it."""
    page = folder / "report.html"
    if not page.is_file():
        if not (folder / "metrics.json").is_file():
            raise ConfigError(f"{folder}: not a finished run folder (no metrics.json)")
        write_reports(folder)
    return page.read_text(encoding="utf-8")


def compare(folders: list[Path], output: Path) -> dict[str, Any]:
    """``lmtune compare RUN... --output OUTPUT``: the table as text and the overlaid loss curves."""
    from lmtune.report import compare_runs

    table = compare_runs(folders, output)
    return {"table": table, "png": _data_uri((output / "compare_loss.png").read_bytes())}


def _data_uri(png: bytes | None) -> str | None:
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" if png else None
