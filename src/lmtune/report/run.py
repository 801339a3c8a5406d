"""Read a run folder: whatever of metrics, config, data report, training log and predictions it holds."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune.errors import ConfigError

logger = logging.getLogger(__name__)

RUN_FILES = (
    "metrics.json", "config.yaml", "data_report.json", "train_log.jsonl",
    "predictions_base.jsonl", "predictions_finetuned.jsonl",
)  # fmt: skip


@dataclass
class Run:
    """The files of one run folder, each empty when absent."""

    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    data_report: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    base: list[dict[str, Any]] = field(default_factory=list)  # predictions_base.jsonl
    finetuned: list[dict[str, Any]] = field(default_factory=list)  # predictions_finetuned.jsonl
    stages: list[Run] = field(default_factory=list)  # a staged run's stage folders, in order

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    def report_samples(self) -> int:
        """``eval.report_samples`` of the run's config (8 when not set)."""
        n = (self.config.get("eval") or {}).get("report_samples", 8)
        return n if isinstance(n, int) and n >= 0 else 8

    def series(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Training-log rows as (label, rows): one unlabelled series, or one per stage with steps continued."""
        if self.log or not self.stages:
            return [("", self.log)] if self.log else []
        out, offset = [], 0
        for stage, row in zip(self.stages, self.metrics.get("stages", []), strict=False):
            rows = [{**r, "step": r["step"] + offset} for r in stage.log if isinstance(r.get("step"), (int, float))]
            if rows:
                out.append((str(row.get("stage", stage.name)), rows))
                offset = max(r["step"] for r in rows)
        return out


def load_run(folder: Path) -> Run:
    """Read a run folder; only a folder that does not exist, or holds none of the run files, is an error."""
    folder = Path(folder)
    if not folder.is_dir() or not any((folder / name).is_file() for name in RUN_FILES):
        raise ConfigError(f"{folder}: not an lmtune run folder (none of {', '.join(RUN_FILES[:2])}, ... in it)")
    run = Run(folder=folder, metrics=_json(folder / "metrics.json"), data_report=_json(folder / "data_report.json"))
    if (folder / "config.yaml").is_file():
        run.config_text = (folder / "config.yaml").read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(run.config_text)
        except yaml.YAMLError:
            loaded = None  # the text is still shown as it is
        run.config = loaded if isinstance(loaded, dict) else {}
    run.log = _jsonl(folder / "train_log.jsonl")
    run.base = _jsonl(folder / "predictions_base.jsonl")
    run.finetuned = _jsonl(folder / "predictions_finetuned.jsonl")
    for stage in run.metrics.get("stages", []):
        path = _stage_folder(folder, str(stage.get("folder", "")))
        run.stages.append(load_run(path) if path else Run(folder=folder / str(stage.get("folder", "?"))))
    return run


def _stage_folder(top: Path, recorded: str) -> Path | None:
    """A stage's folder as recorded (relative to where ``lmtune train`` ran), or by its name inside the run."""
    for path in (Path(recorded), top / Path(recorded).name):
        if recorded and path.is_dir() and any((path / name).is_file() for name in RUN_FILES):
            return path
    return None


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return data if isinstance(data, dict) else {}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file; a line cut short (a run killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += line.strip() != ""
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        logger.warning("%s: %d line(s) are not JSON and were skipped", path, bad)
    return rows
