"""Staged fine-tuning: one config, several stages, each training from the previous stage's merged weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.config import RunConfig
from lmtune.config.loader import stage_configs
from lmtune.errors import ConfigError
from lmtune.files import atomic_write_json, atomic_write_text
from lmtune.objectives import config_text
from lmtune.pipeline import finetune
from lmtune.report import text_table, write_reports
from lmtune.run_folder import prepare_run_folder


def run_stages(cfg: RunConfig, overwrite: bool = False, echo: Any = print) -> dict[str, Any]:
    """Staged fine-tuning: each stage trains from the previous stage's weights.

    A stage's adapter is merged into its base (``merge_and_unload``) and saved as
    ``<stage folder>/merged``, the next stage's ``model.name``.  One ``metrics.json``
    in ``training.output_dir`` holds a row per stage.
    """
    out = Path(cfg.training.output_dir)
    prepare_run_folder(out, overwrite)
    model_name = cfg.model.name
    rows = []
    for i, (name, stage) in enumerate(stage_configs(cfg)):
        echo(f"\n=== stage {i + 1}: {name} ===")
        stage = stage.model_copy(update={"model": stage.model.model_copy(update={"name": model_name})})
        metrics = finetune(stage, overwrite=overwrite, echo=echo)
        rows.append({"stage": name, "folder": stage.training.output_dir, **metrics})
        model_name = str(merge_run(Path(stage.training.output_dir)))
    combined = {
        "stages": rows,
        "base": rows[0].get("base", {}),
        "finetuned": rows[-1]["finetuned"],
        "train_time_s": sum(r["train_time_s"] for r in rows),
    }
    atomic_write_text(out / "config.yaml", config_text(cfg))
    atomic_write_json(out / "metrics.json", combined)
    write_reports(out)
    echo("\n" + stage_table(combined))
    echo(f"\nreport: {out / 'report.html'}")
    return combined


def merge_run(folder: Path) -> Path:
    """The run's weights as one plain Hugging Face model folder (adapters merged in, as export merges them)."""
    if not (folder / "adapter_config.json").is_file():
        return folder  # full / freeze runs already are plain models
    from lmtune.errors import ExportError
    from lmtune.shipping.merge import load_shippable, merge

    try:
        shippable = load_shippable(folder, argument="stage")
    except ExportError as e:  # prompt-learning adapters have nothing to merge
        raise ConfigError(f"{e}; stages need full or LoRA-family methods") from None
    target = folder / "merged"
    merge(shippable).save_pretrained(target)
    shippable.tokenizer.save_pretrained(target)
    return target


def stage_table(combined: dict[str, Any]) -> str:
    lines = []
    for r in combined["stages"]:
        lines.append(f"stage {r['stage']}:")
        lines.append(text_table(r))
    return "\n".join(lines)
