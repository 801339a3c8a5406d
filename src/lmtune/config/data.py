"""The ``data`` section: sources, cleaning, splits, layout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmtune.config.sections import DATA_FORMATS, _Section


class DataSource(_Section):
    """One dataset: a file, a folder of files, or a hub dataset, with its place in a mixture."""

    path: str
    """JSONL / JSON / CSV / Parquet file, a folder of them, or a hub dataset id (``tatsu-lab/alpaca``)."""
    task: str | None = None
    """Task name; evaluation reports metrics per task. Defaults to the file's stem."""
    weight: float | None = Field(None, gt=0)
    """Share of training examples drawn from this source (weights are normalised); null keeps every row once."""
    format: Literal[DATA_FORMATS] | None = None  # type: ignore[valid-type]
    """Shape of this source's rows; null takes ``data.format``."""
    columns: dict[str, str] | None = None
    """Field names to map for this source; null takes ``data.columns``."""
    split: str | None = None
    """Hub datasets: the split (null takes ``data.split``)."""
    subset: str | None = None
    """Hub datasets: the configuration name (null takes ``data.subset``)."""


Sources = str | DataSource | list[str | DataSource]


class DataConfig(_Section):
    """Where the task data is, how it is cleaned and split, and how it becomes examples."""

    train: Sources
    """A file, folder or hub id, or a list of sources (``{path, task, weight}``) for a mixture."""
    eval: Sources | None = None
    """Held-out data; without it ``val_fraction`` of ``train`` is split off (seeded)."""
    format: Literal[DATA_FORMATS] = "auto"  # type: ignore[valid-type]
    columns: dict[str, str] = Field(default_factory=dict)
    """Map the fields lmtune expects to yours, e.g. ``{prompt: question, completion: answer}``."""
    split: str = "train"
    """Hub datasets: which split to read."""
    subset: str | None = None
    """Hub datasets: the configuration (subset) name."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    """Share split off as a test set (written to ``test.jsonl`` in the run folder, not trained on)."""
    split_by: Literal["prompt", "row"] = "prompt"
    """``prompt``: rows sharing a prompt stay on one side of every split (fractions count prompts), and
    held-out rows sharing a prompt become one example with all their answers as references; ``row``:
    rows are split one by one and every held-out row is its own example."""
    stratify: Literal["auto", "yes", "no"] = "auto"
    """Stratify the split by answer; ``auto`` does when the task is classification-like (few distinct answers)."""
    max_length: int = Field(512, gt=0)
    """Tokens per example (prompt + answer)."""
    overlong: Literal["drop", "truncate"] = "drop"
    """What to do with examples longer than ``max_length``: drop them, or cut them at the end."""
    normalize: bool = True
    """Unicode NFC, line endings to ``\\n``, strip ends, drop invisible control characters."""
    dedup: bool = True
    """Drop exact duplicates (normalised prompt + answer)."""
    near_dedup: bool = False
    """Drop near-duplicates (MinHash/LSH over word 5-grams); off by default: templated data can look alike."""
    near_dedup_threshold: float = Field(0.85, gt=0, le=1)
    """Estimated Jaccard similarity above which two rows count as near-duplicates."""
    decontaminate: bool = True
    """Drop held-out rows whose prompt also appears in the training data."""
    cache: bool = True
    """Cache tokenised data under ``$LMTUNE_CACHE/datasets`` (keyed by data, tokenizer and this section)."""
    train_on_prompt: bool = False
    """Train on prompt tokens too (by default only answer tokens carry labels)."""
    template: Literal["auto", "chat", "plain"] = "auto"
    """``chat`` uses the tokenizer's chat template, ``plain`` the documented
    ``### Instruction / ### Response`` layout; ``auto`` takes chat when the tokenizer has one."""
    system_prompt: str | None = None
    """System message put before every prompt in the chat layout (the template's default when null)."""

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    def sources(self, which: str = "train") -> list[DataSource]:
        """``train`` / ``eval`` as a list of sources, each with its defaults filled in."""
        given = getattr(self, which)
        items = [] if given is None else given if isinstance(given, list) else [given]
        out = []
        for item in items:
            src = DataSource(path=item) if isinstance(item, str) else item
            out.append(
                src.model_copy(
                    update={
                        "format": src.format or self.format,
                        "columns": src.columns if src.columns is not None else self.columns,
                        "split": src.split or self.split,
                        "subset": src.subset or self.subset,
                    }
                )
            )
        return out
