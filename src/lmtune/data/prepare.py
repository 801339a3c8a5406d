"""Task data for a run: read train/eval files, split off a held-out set, encode."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lmtune.config import DataConfig
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import Dataset, Example, read_examples
from lmtune.errors import DataError


@dataclass
class TaskData:
    train: list[Example]
    eval: list[Example]
    shape: str
    eval_source: str  # the file, or "N% of <train> (seed S)"


def load_task_data(cfg: DataConfig, seed: int) -> TaskData:
    """Read (and validate) the data before any model is loaded, so bad data fails fast."""
    for key in ("train", "eval"):
        path = getattr(cfg, key)
        if path and not Path(path).exists():
            raise DataError(f"data.{key}: {path}: no such file (relative paths start from the current folder)")
    train = read_examples(cfg.train, cfg.format)
    if cfg.eval:
        held_out = read_examples(cfg.eval, cfg.format)
        _check_same_kind(train, held_out)
        return TaskData(train.examples, held_out.examples, train.shape, cfg.eval)
    train_rows, eval_rows = split(train.examples, cfg.val_fraction, seed)
    return TaskData(train_rows, eval_rows, train.shape, f"{cfg.val_fraction:.0%} of {cfg.train} (seed {seed})")


def split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded random split; the held-out part gets at least one example."""
    if len(examples) < 2:
        raise DataError(f"{len(examples)} example(s) cannot be split into train and held-out; give data.eval")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(examples) * fraction)), len(examples) - 1)
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def _check_same_kind(train: Dataset, held_out: Dataset) -> None:
    if (train.shape == "text") != (held_out.shape == "text"):
        raise DataError(f"{held_out.path}: shape '{held_out.shape}' does not match the training data's '{train.shape}'")


def encode_all(encoder: Encoder, examples: list[Example], where: str) -> list[dict[str, list[int]]]:
    """Encode examples; fail if truncation left none with an answer token to learn from."""
    encoded = [encoder.encode(e) for e in examples]
    trainable = [e for e in encoded if any(label != IGNORE for label in e["labels"])]
    if not trainable:
        raise DataError(
            f"{where}: no example keeps an answer token within data.max_length={encoder.max_length}; raise it"
        )
    return trainable
