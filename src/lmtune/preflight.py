"""Everything ``lmtune train`` checks before it loads a model or creates a file.

The same checks run in the command's own process before ``--nproc N`` starts any worker (so a bad data
file is one line and nothing starts), and again in each worker, before rank 0 touches the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.build import check_data_fits, check_device
from lmtune.config import RunConfig, load_config
from lmtune.config.loader import stage_configs
from lmtune.data.general import check_reference
from lmtune.data.prepare import TaskData, load_task_data
from lmtune.errors import ConfigError
from lmtune.launch import ranks
from lmtune.objectives import check_keys
from lmtune.objectives.rewards import import_function
from lmtune.provenance import run_record
from lmtune.run_folder import resume_point


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """``lmtune train`` / ``plan``'s config: validated, and every key it sets read by its objective and method
    (each stage's too); a problem is one line naming the file."""
    cfg = load_config(path, overrides)
    where = str(path) if path else "config"
    check_keys(cfg, where)
    for i, (name, stage) in enumerate(stage_configs(cfg) if cfg.stages else []):
        check_keys(stage, f"{where}: stages[{i}] ({name})")
    return cfg


@dataclass
class Preflight:
    data: TaskData
    record: dict[str, Any]
    checkpoint: Path | None
    """The committed checkpoint the run resumes from, or None for a fresh run."""


def preflight(
    cfg: RunConfig, overwrite: bool = False, resume: bool = False, world_size: int | None = None
) -> Preflight:
    """Config, data, model name and run folder checked, for a run in ``world_size`` processes (default: this
    process's run); nothing loaded or written."""
    check_keys(cfg)
    check_device(cfg)
    for ref in cfg.eval.checks:  # a typo fails now, not after training
        import_function(ref, "eval.checks")
    check_reference("eval.reference", cfg.eval.reference)
    check_reference("continual.reference", cfg.continual.reference)
    data = load_task_data(cfg.data, cfg.seed)  # bad data fails before the slow model load
    check_data_fits(cfg, data)
    record = run_record(cfg, ranks.world_size() if world_size is None else world_size)
    checkpoint = resume_point(Path(cfg.training.output_dir), record, overwrite, resume)
    return Preflight(data, record, checkpoint)


def refuse_distributed(what: str, launching: bool = False) -> None:
    if launching or ranks.distributed():
        raise ConfigError(f"{what}: runs in one process for now; run it without --nproc / torchrun")


def refuse_distributed_config(cfg: RunConfig) -> None:
    """What does not run under several processes yet: staged and private runs."""
    if cfg.privacy is not None:  # Opacus's DPDDP and distributed Poisson sampler are not wired in
        refuse_distributed("privacy", launching=True)
    if cfg.stages:
        refuse_distributed("stages", launching=True)
