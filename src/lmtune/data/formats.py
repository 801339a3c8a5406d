"""Rows in the shapes people have -> `Example`s, with file:line errors.

Shapes (detected from the first row's keys, or named by ``data.format``):

==================  =====================================================
``text``            ``{"text": "..."}`` — every token is trained on
``prompt_completion`` ``{"prompt": "...", "completion": "..."}``
``input_output``    ``{"input": "...", "output": "..."}``
``alpaca``          ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` may be empty)
``messages``        ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}``
``sharegpt``        ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}``
``cot``             ``{"question": "...", "rationale": "...", "answer": "..."}`` — the model learns
                    to write its reasoning, then ``Answer: <answer>``
==================  =====================================================

Any row may carry a ``system`` field: a system message for that row.  Field
names can be mapped (``data.columns: {prompt: question}``) before detection.

In evaluation data the answer (``completion`` / ``output`` / last assistant
``content``) may be a list of strings: several references for one prompt.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmtune.errors import DataError

MAX_ERRORS = 10
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
COT_ANSWER = "{rationale}\n\nAnswer: {answer}"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# shape -> the fields that identify it, in detection order (alpaca before input_output).
SHAPES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "cot": ("question", "rationale", "answer"),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "input_output": ("input", "output"),
}


@dataclass(frozen=True)
class Example:
    """One training/evaluation example.

    Every shape but ``text`` becomes a conversation whose last turn is the
    assistant's answer; ``references`` holds that answer (or several, for
    evaluation rows with a list of references).
    """

    messages: tuple[dict[str, str], ...] = ()
    text: str | None = None
    references: tuple[str, ...] = field(default=())
    task: str = ""
    source: str = ""  # "file:line", for reports that point at rows

    @property
    def prompt(self) -> str:
        """The last user turn (what a person would read as "the question")."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def each_reference(self) -> list[Example]:
        """One example per reference, the final answer replaced: how every held-out answer is scored."""
        if self.text is not None or len(self.references) <= 1:
            return [self]
        head, last = self.messages[:-1], self.messages[-1]
        return [replace(self, messages=(*head, {**last, "content": r}), references=(r,)) for r in self.references]


@dataclass(frozen=True)
class Dataset:
    path: Path
    shape: str
    examples: list[Example]


def read_examples(
    path: str | Path,
    shape: str = "auto",
    columns: dict[str, str] | None = None,
    task: str | None = None,
    split: str = "train",
    subset: str | None = None,
) -> Dataset:
    """Read and validate every row of a file, a folder of files, or a hub dataset.

    Rows are streamed: only the resulting examples are kept in memory.

    Raises:
        DataError: ``file:line: field 'x': what was expected, what was found``;
            up to ``MAX_ERRORS`` problems are collected in one message.
    """
    path = Path(path)
    task = task or path.stem
    errors: list[str] = []
    examples: list[Example] = []
    detected_at = None  # "file:line" of the row the shape was detected from
    for where, line, row in _rows_of(path, split, subset):
        if isinstance(row, BadLine):
            errors.append(f"{where}:{line}: {row}")
        else:
            if columns:
                row = _map_columns(row, columns)
            if shape == "auto":
                shape, detected_at = detect_shape(where, line, row), f"line {line} of {where}"
            try:
                row_task = row.get("task") if isinstance(row.get("task"), str) and row.get("task") else task
                examples.append(replace(to_example(row, shape), task=row_task, source=f"{where}:{line}"))
            except _RowError as e:
                errors.append(f"{where}:{line}: {_mixed_shapes(row, shape, detected_at) or e}")
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        more = f" (and more; first {MAX_ERRORS} shown)" if len(errors) >= MAX_ERRORS else ""
        raise DataError("; ".join(errors) + more)
    if not examples:
        raise DataError(f"{path}: no rows (the file is empty or holds only blank lines)")
    return Dataset(path, shape, examples)


def _map_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``{prompt: question}`` -> the row's ``question`` field is read as ``prompt``."""
    mapped = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs in row:
            mapped[ours] = row[theirs]
    return mapped


def _shape_of(row: dict[str, Any]) -> str | None:
    return next((shape for shape, keys in SHAPES.items() if all(k in row for k in keys)), None)


def _mixed_shapes(row: dict[str, Any], shape: str, detected_at: str | None) -> str | None:
    """A row of another shape than the file's first row (one shape per source)."""
    other = _shape_of(row)
    if detected_at is None or other is None or other == shape:
        return None
    return (
        f"rows of mixed shapes: this row is '{other}' ({', '.join(SHAPES[other])}), but {detected_at} is "
        f"'{shape}' ({', '.join(SHAPES[shape])}); put each shape in its own file"
    )


def detect_shape(path: Path | str, line: int, row: dict[str, Any]) -> str:
    if shape := _shape_of(row):
        return shape
    found = ", ".join(map(repr, row)) or "no fields"
    raise DataError(
        f"{path}:{line}: cannot tell the data shape from fields {found}; expected one of "
        "text | prompt+completion | input+output | instruction+output | messages | conversations | "
        "question+rationale+answer (map other names with data.columns)"
    )


def to_example(row: dict[str, Any], shape: str) -> Example:
    if shape == "text":
        return Example(text=_text(row, "text", allow_empty=True))
    system = _text(row, "system", required=False)
    if shape in ("messages", "sharegpt"):
        example = _messages_example(row) if shape == "messages" else _messages_example(_from_sharegpt(row))
        if system and example.messages[0]["role"] != "system":
            example = replace(example, messages=({"role": "system", "content": system}, *example.messages))
        return example
    if shape == "cot":
        prompt = _text(row, "question")
        rationale, answer = _text(row, "rationale", allow_empty=True), _text(row, "answer", allow_empty=True)
        answers = (COT_ANSWER.format(rationale=rationale.strip(), answer=answer.strip()) if answer.strip() else "",)
    elif shape == "alpaca":
        instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        answers = _answers(row, "output")
    elif shape == "prompt_completion":
        prompt, answers = _text(row, "prompt"), _answers(row, "completion")
    elif shape == "input_output":
        prompt, answers = _text(row, "input"), _answers(row, "output")
    else:  # the config validated the name; this guards programmatic callers
        raise ValueError(f"unknown data shape {shape!r}")
    turns = ({"role": "user", "content": prompt}, {"role": "assistant", "content": answers[0]})
    if system:
        turns = ({"role": "system", "content": system}, *turns)
    return Example(messages=turns, references=answers)


def _from_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _RowError(
            f"field 'conversations': expected a non-empty list of {{from, value}}, found {_describe(turns)}"
        )
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise _RowError(f"field 'conversations[{i}]': expected {{from, value}}, found {_describe(turn)}")
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            known = ", ".join(SHAREGPT_ROLES)
            raise _RowError(
                f"field 'conversations[{i}].from': unknown speaker {turn['from']!r} (expected one of {known})"
            )
        messages.append({"role": role, "content": turn["value"]})
    return {"messages": messages}


# --------------------------------------------------------------------------- fields


class _RowError(ValueError):
    pass


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


def _text(row: dict[str, Any], key: str, required: bool = True, allow_empty: bool = False) -> str:
    if key not in row:
        if required:
            raise _RowError(f"field '{key}': missing")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(f"field '{key}': expected text, found {_describe(value)}")
    if required and not allow_empty and not value.strip():
        raise _RowError(f"field '{key}': empty text")
    return value


def _answers(row: dict[str, Any], key: str) -> tuple[str, ...]:
    value = row.get(key)
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise _RowError(f"field '{key}': a list of references must hold non-empty texts")
        return tuple(value)
    # An empty answer is not an error: cleaning drops it and counts it (data_report.json).
    return (_text(row, key, allow_empty=True),)


def _messages_example(row: dict[str, Any]) -> Example:
    turns = row.get("messages")
    if not isinstance(turns, list) or not turns:
        raise _RowError(f"field 'messages': expected a non-empty list of {{role, content}}, found {_describe(turns)}")
    clean: list[dict[str, str]] = []
    answers: tuple[str, ...] = ()
    for i, turn in enumerate(turns):
        where = f"field 'messages[{i}]"
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise _RowError(f"{where}': expected {{role, content}}, found {_describe(turn)}")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise _RowError(f"{where}.role': unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if role == "assistant" and i == len(turns) - 1 and isinstance(content, list):
            answers = _answers(turn, "content")  # several references for the final answer
            content = answers[0]
        elif not isinstance(content, str) or (role != "assistant" and not content.strip()):
            raise _RowError(f"{where}.content': expected non-empty text, found {_describe(content)}")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise _RowError("field 'messages': the last turn must be the assistant's answer")
    return Example(messages=tuple(clean), references=answers or (clean[-1]["content"],))


# --------------------------------------------------------------------------- files


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
