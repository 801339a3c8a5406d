"""Rows in the shapes people have -> `Example`s, with file:line errors.

Shapes (detected from the first row's keys, or named by ``data.format``):

==================  =====================================================
``text``            ``{"text": "..."}`` — every token is trained on
``prompt_completion`` ``{"prompt": "...", "completion": "..."}``
``input_output``    ``{"input": "...", "output": "..."}``
``alpaca``          ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` may be empty)
``messages``        ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}``
==================  =====================================================

In evaluation data the answer (``completion`` / ``output`` / last assistant
``content``) may be a list of strings: several references for one prompt.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.errors import DataError

MAX_ERRORS = 10
ROLES = ("system", "user", "assistant")

# shape -> the fields that identify it, in detection order (alpaca before input_output).
SHAPES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
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

    @property
    def prompt(self) -> str:
        """The last user turn (what a person would read as "the question")."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass(frozen=True)
class Dataset:
    path: Path
    shape: str
    examples: list[Example]


def read_examples(path: str | Path, shape: str = "auto") -> Dataset:
    """Read and validate every row of a JSONL / JSON / CSV file.

    Raises:
        DataError: ``file:line: field 'x': what was expected, what was found``;
            up to ``MAX_ERRORS`` problems are collected in one message.
    """
    path = Path(path)
    rows = list(_read_rows(path))
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty or holds only blank lines)")
    if shape == "auto":
        shape = detect_shape(path, *rows[0])
    errors: list[str] = []
    examples: list[Example] = []
    for line, row in rows:
        try:
            examples.append(to_example(row, shape))
        except _RowError as e:
            errors.append(f"{path}:{line}: {e}")
            if len(errors) >= MAX_ERRORS:
                break
    if errors:
        more = f" (and more; first {MAX_ERRORS} shown)" if len(errors) >= MAX_ERRORS else ""
        raise DataError("; ".join(errors) + more)
    return Dataset(path, shape, examples)


def detect_shape(path: Path, line: int, row: dict[str, Any]) -> str:
    for shape, keys in SHAPES.items():
        if all(k in row for k in keys):
            return shape
    found = ", ".join(map(repr, row)) or "no fields"
    raise DataError(
        f"{path}:{line}: cannot tell the data shape from fields {found}; expected one of "
        "text | prompt+completion | input+output | instruction+output | messages"
    )


def to_example(row: dict[str, Any], shape: str) -> Example:
    if shape == "text":
        return Example(text=_text(row, "text"))
    if shape == "messages":
        return _messages_example(row)
    if shape == "alpaca":
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
    return Example(messages=turns, references=answers)


# --------------------------------------------------------------------------- fields


class _RowError(ValueError):
    pass


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _text(row: dict[str, Any], key: str, required: bool = True) -> str:
    if key not in row:
        if required:
            raise _RowError(f"field '{key}': missing")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(f"field '{key}': expected text, found {_describe(value)}")
    if required and not value.strip():
        raise _RowError(f"field '{key}': empty text")
    return value


def _answers(row: dict[str, Any], key: str) -> tuple[str, ...]:
    value = row.get(key)
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise _RowError(f"field '{key}': a list of references must hold non-empty texts")
        return tuple(value)
    return (_text(row, key),)


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
        elif not isinstance(content, str) or not content.strip():
            raise _RowError(f"{where}.content': expected non-empty text, found {_describe(content)!s}")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise _RowError("field 'messages': the last turn must be the assistant's answer")
    return Example(messages=tuple(clean), references=answers or (clean[-1]["content"],))


# --------------------------------------------------------------------------- files


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank row of a JSONL, JSON or CSV file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a .jsonl, .json or .csv file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    else:
        yield from _jsonl_rows(path)


def _decode(path: Path, raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            text = _decode(path, raw, line).strip()
            if not text:
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line}: expected a JSON object per line, found {_describe(row)}")
            yield line, row


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
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


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _decode(path, path.read_bytes(), 1)
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        if None in row:
            raise DataError(f"{path}:{reader.line_num}: more values than the header has columns")
        if any(v is None for v in row.values()):
            raise DataError(f"{path}:{reader.line_num}: fewer values than the header has columns")
        if any(v.strip() for v in row.values()):
            yield reader.line_num, dict(row)
