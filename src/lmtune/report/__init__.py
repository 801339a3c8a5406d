"""Run folder -> ``report.md`` and ``report.html``; several run folders -> one comparison.

A thin renderer: ``tables`` (text and Markdown), ``plots`` (PNG figures), ``page`` (HTML),
``compare`` (runs side by side), ``run`` (reading a run folder). matplotlib is imported only
when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

from lmtune.files import atomic_write_text
from lmtune.report.compare import compare_runs
from lmtune.report.run import Run, load_run
from lmtune.report.tables import (
    COLUMNS,
    forgetting_line,
    markdown_report,
    markdown_table,
    privacy_line,
    table_rows,
    text_table,
)

__all__ = [
    "COLUMNS", "Run", "compare_runs", "forgetting_line", "load_run", "markdown_report", "markdown_table",
    "privacy_line", "table_rows", "text_table", "write_reports",
]  # fmt: skip


def write_reports(folder: Path) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` from whatever run files ``folder`` holds.

    Args:
        folder: a run folder (``metrics.json``, ``config.yaml``, ``data_report.json``,
            ``train_log.jsonl``, ``predictions_*.jsonl``; any of them may be missing).

    Returns:
        ``{"markdown": .../report.md, "html": .../report.html}``.

    Raises:
        ConfigError: the folder does not exist or holds none of the run files.
    """
    from lmtune.report.page import render

    run = load_run(Path(folder))
    paths = {"markdown": run.folder / "report.md", "html": run.folder / "report.html"}
    markdown = markdown_report(run.metrics, side_by_side(run), run.report_samples())
    atomic_write_text(paths["markdown"], markdown)
    atomic_write_text(paths["html"], render(run))
    return paths


def side_by_side(run: Run) -> list[dict]:
    """The fine-tuned predictions, each with the base model's answer to the same prompt under ``"base"``."""
    if not run.finetuned:
        return [{**b, "base": b.get("prediction"), "prediction": "(not evaluated)"} for b in run.base]
    base = [b.get("prediction") for b in run.base]  # same prompts, same order
    return [{**ft, "base": base[i]} if i < len(base) else ft for i, ft in enumerate(run.finetuned)]
