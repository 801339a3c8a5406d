"""``lmtune data check``: read, clean, split and tokenise a dataset as training would; print and write its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.files import atomic_write_json


def check_data(data_cfg: Any, seed: int, model: str, output: Path, echo: Any = print) -> dict[str, Any]:
    """The data report of ``data_cfg`` tokenised with ``model``'s tokenizer, written to ``output``."""
    from lmtune.data.cache import tokenize_cached
    from lmtune.data.encode import Encoder
    from lmtune.data.prepare import load_task_data, summary
    from lmtune.models import load_tokenizer, resolve

    refuse_foreign_file(output)
    data = load_task_data(data_cfg, seed)
    tokenizer = load_tokenizer(resolve(model))
    d = data_cfg
    encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
    tokenize_cached(encoder, data, data_cfg, seed)
    echo(summary(data.report))
    write_data_report(output, data.report)
    echo(f"report: {output}")
    return data.report


def write_data_report(path: Path, report: dict[str, Any]) -> None:
    """``data_report.json``, marked as lmtune's (`refuse_foreign_file` replaces only such files)."""
    atomic_write_json(path, {"lmtune_data_report": 1, **report})


def refuse_foreign_file(path: Path) -> None:
    """Only ever replace a data report lmtune wrote itself."""
    if not path.exists():
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        ours = isinstance(found, dict) and "lmtune_data_report" in found
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise LmtuneError(f"--output {path}: exists and is not an lmtune data report; choose another path")
