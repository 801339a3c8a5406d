"""Checkpoints that are either complete or ignored, and the choice of where a run resumes.

Trainer writes ``checkpoint-N`` file by file, in place: a kill in the middle leaves
a folder that looks like a checkpoint but is not one.  lmtune commits a checkpoint
the way a database commits a transaction: once Trainer has written every file,
they are flushed to disk and a small marker file is written atomically.  Only
committed checkpoints are resumed from, and older checkpoints are deleted only
after a newer one is committed, so a complete checkpoint exists at every instant.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lmtune.files import TMP_PREFIX, atomic_write_json, fsync_tree

COMMITTED = "lmtune_checkpoint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def commit_checkpoint(folder: Path, step: int) -> None:
    fsync_tree(folder)
    atomic_write_json(folder / COMMITTED, {"step": step})


def checkpoint_folders(run: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder, committed or not, by step."""
    found = [p for p in Path(run).glob("checkpoint-*") if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(folder: Path) -> int:
    return int(_CHECKPOINT.match(Path(folder).name).group(1))


def committed_checkpoints(run: Path) -> list[Path]:
    return [p for p in checkpoint_folders(run) if (p / COMMITTED).is_file()]


def latest_checkpoint(run: Path) -> Path | None:
    done = committed_checkpoints(run)
    return done[-1] if done else None


def drop_unfinished_writes(run: Path) -> list[Path]:
    """Remove what a killed run left half-written: uncommitted checkpoints and temporary files."""
    dropped = [p for p in checkpoint_folders(run) if not (p / COMMITTED).is_file()]
    dropped += [p for p in Path(run).glob(TMP_PREFIX + "*")]
    for path in dropped:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return dropped


def rotate_checkpoints(run: Path, limit: int | None, keep: Path | None = None) -> None:
    """Keep the newest ``limit`` committed checkpoints (and ``keep``, the best one)."""
    if not limit:
        return
    done = committed_checkpoints(run)
    keep_name = Path(keep).name if keep else None
    for folder in done[: max(len(done) - limit, 0)]:
        if folder.name != keep_name:
            shutil.rmtree(folder)
