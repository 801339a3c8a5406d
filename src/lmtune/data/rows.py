"""Rows from files: JSONL, JSON, CSV, Parquet, a folder of them, or a hub dataset.

Each row comes with its file and line, for ``file:line`` errors; a line that is not a
row at all (malformed JSON, not UTF-8, wrong column count) comes as a ``BadLine``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmtune.errors import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class BadLine(str):
    """A line that is not a row at all (malformed JSON, not UTF-8, wrong column count): its error message."""


RowOrBadLine = dict[str, Any] | BadLine


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "empty text" if not value.strip() else "text"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _rows_of(path: Path, split: str, subset: str | None) -> Iterator[tuple[str, int, RowOrBadLine]]:
    """(where, line, row) from a file, every data file of a folder, or a hub dataset."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: folder holds no {' / '.join(FILE_SUFFIXES)} files")
        for file in files:
            for line, row in _read_rows(file):
                yield str(file), line, row
    elif path.exists() or path.suffix.lower() in FILE_SUFFIXES or str(path).startswith((".", "/", "~")):
        for line, row in _read_rows(path):
            yield str(path), line, row
    else:
        name = path.as_posix()
        for i, row in enumerate(_hub_rows(name, split, subset), start=1):
            yield f"{name}[{split}]", i, row


def _read_rows(path: Path) -> Iterator[tuple[int, RowOrBadLine]]:
    """(line number, row) for every non-blank row of a JSONL, JSON, CSV or Parquet file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        yield from _jsonl_rows(path)


def _parquet_rows(path: Path) -> Iterator[tuple[int, RowOrBadLine]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own error kinds
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    line = 0
    for batch in reader.iter_batches(batch_size=4096):  # streamed, never the whole table
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _hub_rows(name: str, split: str, subset: str | None) -> Iterator[dict[str, Any]]:
    """Rows of a hub dataset through ``datasets``; a clear error offline instead of a hang."""
    import os

    from lmtune.models import hub_reachable

    if os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "")).lower() in ("1", "true", "yes"):
        online = False
    else:
        online = hub_reachable()
    if not online:
        raise DataError(
            f"{name}: not a local file or folder, and the Hugging Face hub cannot be reached (offline?) "
            "to read it as a hub dataset; give a local JSONL / JSON / CSV / Parquet file"
        )
    import datasets

    try:
        dataset = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs the first line
        raise DataError(f"{name}: cannot load hub dataset ({str(e).splitlines()[0]})") from None
    yield from dataset


def _decode(path: Path, raw: bytes, line: int) -> str:
    """UTF-8 text (a byte-order mark at the start is accepted and dropped)."""
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{_line_of(raw, e.start, line)}: {_not_utf8(raw, e, line)}") from None


def _not_utf8(raw: bytes, e: UnicodeDecodeError, line: int) -> BadLine:
    column = e.start - raw.rfind(b"\n", 0, e.start)
    return BadLine(f"not UTF-8 text (byte {raw[e.start]:#04x} at column {column}); save the file as UTF-8")


def _line_of(raw: bytes, offset: int, first_line: int) -> int:
    return first_line + raw.count(b"\n", 0, offset)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, RowOrBadLine]]:
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8").strip()
            except UnicodeDecodeError as e:
                yield line, _not_utf8(raw, e, line)
                continue
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield line, BadLine(f"malformed JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                row = BadLine(f"expected a JSON object per line, found {_describe(row)}")
            yield line, row


def _json_rows(path: Path) -> Iterator[tuple[int, RowOrBadLine]]:
    text = _decode(path, path.read_bytes(), 1)
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, found {_describe(data)}")
    # json.loads keeps no line numbers; the row's position in the list stands in for them
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i}: expected an object, found {_describe(row)}")
        yield i, row


def _csv_rows(path: Path) -> Iterator[tuple[int, RowOrBadLine]]:
    text = _decode(path, path.read_bytes(), 1)
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        columns = ", ".join(reader.fieldnames or [])
        if None in row:
            yield reader.line_num, BadLine(f"more values than the header has columns ({columns})")
        elif any(v is None for v in row.values()):
            missing = ", ".join(k for k, v in row.items() if v is None)
            yield reader.line_num, BadLine(f"fewer values than the header has columns (no value for {missing})")
        elif any(v.strip() for v in row.values()):
            yield reader.line_num, dict(row)
