"""The Data page: ``lmtune data check`` on a picked or uploaded file, plus a few rows as the model sees them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lmtune.config import DataConfig
from lmtune.config.messages import plain_name
from lmtune.errors import DataError
from lmtune.files import atomic_write_text

SAMPLE_ROWS = 3
SEED = 42  # lmtune data check's seed for a FILE


def check_file(path: str, fmt: str, model: str, reports: Path) -> dict[str, Any]:
    """What ``lmtune data check FILE --format FMT --model MODEL`` prints and writes, and sample rows.

    The report goes to ``reports/<file stem>.data_report.json`` (the CLI's ``--output``).
    """
    from lmtune.data.check import check_data

    if not path.strip():
        raise DataError("data check: give a FILE (a path on this machine, or upload one)")
    data_cfg = DataConfig(train=path.strip(), format=fmt)
    printed: list[str] = []
    output = reports / f"{Path(path).stem}.data_report.json"
    report = check_data(data_cfg, SEED, model, output, echo=printed.append)
    return {"summary": "\n".join(printed), "report": report, "samples": sample_rows(data_cfg, model)}


def sample_rows(data_cfg: DataConfig, model: str, n: int = SAMPLE_ROWS) -> list[list[dict[str, Any]]]:
    """The first ``n`` training rows laid out by the model's template: ``[{text, trained}, ...]`` per row."""
    from lmtune.data.encode import Encoder
    from lmtune.data.prepare import load_task_data
    from lmtune.models import load_tokenizer, resolve

    data = load_task_data(data_cfg, SEED)
    d = data_cfg
    encoder = Encoder(load_tokenizer(resolve(model)), d.template, d.system_prompt, d.max_length, d.train_on_prompt)
    return [[{"text": s.text, "trained": s.trained} for s in encoder.segments(ex)] for ex in data.train[:n]]


def save_upload(name: str, text: str, uploads: Path) -> Path:
    """Keep an uploaded file under ``uploads``; never replaces a different file of the same name."""
    safe = Path(name).name
    if not plain_name(safe):
        raise DataError(f"upload {name!r}: use a plain file name (letters, digits, '-', '_', '.')")
    target = uploads / safe
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    if target.exists() and target.read_text(encoding="utf-8", errors="replace") != text:
        target = uploads / f"{target.stem}-{digest}{target.suffix}"
    atomic_write_text(target, text)
    return target
