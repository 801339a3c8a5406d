"""The run folder (``training.output_dir``): start it, refuse to clobber it, or pick up where it stopped.

A folder that holds anything is never written into unless it is an unfinished run of
the same config, data and model (it resumes), or the user passed ``--overwrite``
(then only the files lmtune itself writes are removed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmtune.checkpoints import checkpoint_folders, checkpoint_step, drop_unfinished_writes, latest_checkpoint
from lmtune.errors import ConfigError
from lmtune.files import TMP_PREFIX, atomic_write_text, fsync_folder, fsync_tree
from lmtune.launch import ranks
from lmtune.provenance import RECORD, what_changed

DATA_REPORT = "data_report.json"
TRAIN_LOG = "train_log.jsonl"
# Everything lmtune and Trainer/PEFT write into a run folder; --overwrite removes only these.
RUN_FILES = (
    DATA_REPORT, RECORD, "test.jsonl", "config.yaml", "metrics.json", TRAIN_LOG,
    "predictions_base.jsonl", "predictions_pruned.jsonl", "predictions_finetuned.jsonl", "safety_base.jsonl",
    "safety_finetuned.jsonl",
    "report.md", "report.html", "README.md", "adapter_config.json", "adapter_model.safetensors", "config.json",
    "generation_config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "training_args.bin",
    "vocab.json", "merges.txt",
)  # fmt: skip
STAGE_GLOB = "[0-9]*-*"  # stage folders of staged runs: "1-general", "2-weather"
# "ref": the reference adapter TRL's DPO keeps next to the trained one (PEFT saves it in a subfolder)
RUN_GLOBS = ("checkpoint-*", "model-*.safetensors", "runs", "merged", "export", "ref", STAGE_GLOB, ".tmp-*")
SHOWN_CHANGES = 5


def resume_point(out: Path, record: dict[str, Any], overwrite: bool, resume: bool) -> Path | None:
    """The committed checkpoint to resume from, or None for a fresh run; refuses a folder in use.

    Creates and changes nothing: the caller prepares the folder once every check has passed.
    """
    if overwrite and resume:
        raise ConfigError("--overwrite starts the run again and --resume continues it: give one of them")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"training.output_dir: {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise ConfigError(f"--resume: {out} holds no run to resume")
        return None
    if overwrite:
        return None
    if (out / "metrics.json").exists():
        raise ConfigError(
            f"training.output_dir: {out} already holds a finished run{' (nothing to resume)' if resume else ''}; "
            "pass --overwrite to replace it, or set another folder with --set training.output_dir=..."
        )
    checkpoint = latest_checkpoint(out)
    started = _read_record(out)
    if checkpoint is None or started is None:
        what = "an unfinished run with no complete checkpoint" if started or checkpoint_folders(out) else "files"
        raise ConfigError(
            f"training.output_dir: {out} already holds {what}; pass --overwrite to start the run again, "
            "or set another folder with --set training.output_dir=..."
        )
    if changes := what_changed(started, record):
        more = f" (and {len(changes) - SHOWN_CHANGES} more)" if len(changes) > SHOWN_CHANGES else ""
        raise ConfigError(
            f"cannot resume the run in {out}: since it started, {'; '.join(changes[:SHOWN_CHANGES])}{more}. "
            "Undo the change to resume, pass --overwrite to start again, or set another training.output_dir"
        )
    return checkpoint


def _read_record(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_run_folder(out: Path, overwrite: bool) -> None:
    """Create the folder; with ``overwrite``, first remove the files of the run it holds (ours only)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"training.output_dir: {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "a finished run" if (out / "metrics.json").exists() else "files"
        raise ConfigError(
            f"training.output_dir: {out} already holds {what}; pass --overwrite to replace the run, "
            "or set another folder with --set training.output_dir=..."
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for pattern in RUN_GLOBS:
        for path in out.glob(pattern):
            if pattern == STAGE_GLOB and not (path / "config.yaml").is_file():
                continue  # a folder of the user's that happens to look like a stage folder
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def continue_run_folder(out: Path, step: int) -> None:
    """Get a killed run's folder ready to go on from the checkpoint at ``step``.

    Half-written checkpoints and temporary files are removed, and the training log loses
    the lines logged after that step (they are logged again) and a line cut off mid-write.
    """
    drop_unfinished_writes(out)
    log = out / TRAIN_LOG
    if log.is_file():
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line + "\n")
            except ValueError:
                continue
        atomic_write_text(log, "".join(kept))


__all__ = ["checkpoint_step", "continue_run_folder", "prepare_run_folder", "resume_point"]


def save_weights(trainer: Any, tokenizer: Any, out: Path) -> None:
    """The adapter (PEFT) or full model, as safetensors, and the tokenizer, into ``out``."""

    def write(staging: Path) -> None:
        trainer.save_model(str(staging))
        if not ranks.is_main():
            return
        tokenizer.save_pretrained(staging)
        # Trainer pickles its arguments next to the weights; config.yaml already holds them, and a run
        # folder that others load should hold no pickle files
        (staging / "training_args.bin").unlink(missing_ok=True)

    save_into(out, write)


def save_into(out: Path, write: Any) -> None:
    """``write(folder)`` into a temporary folder inside ``out``, flushed, then renamed in file by file,
    so a kill mid-save never leaves a half-written weights file.

    Under several processes every rank calls ``write`` on rank 0's folder (a sharded model is gathered
    by all of them; Trainer writes from rank 0) and rank 0 alone moves the files in.
    """
    staging = Path(ranks.broadcast(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out) if ranks.is_main() else None))
    try:
        write(staging)
        ranks.barrier()
        if ranks.is_main():
            fsync_tree(staging)
            for path in staging.iterdir():
                os.replace(path, out / path.name)
            fsync_folder(out)
    finally:
        if ranks.is_main():
            shutil.rmtree(staging, ignore_errors=True)
