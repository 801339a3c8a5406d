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
``preference``      ``{"prompt": ..., "chosen": ..., "rejected": ...}`` — a preference pair
``hh_rlhf``         ``{"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected": ...}`` — pair, prompt implicit
``kto``             ``{"prompt": ..., "completion": ..., "label": true}`` — one answer, desirable or not
``prompt_only``     ``{"prompt": ..., ...}`` — prompts (GRPO); other fields kept in ``Example.extra``
==================  =====================================================

The last four are read by `lmtune.data.preference` (details there).

Any row may carry a ``system`` field: a system message for that row.  Field
names can be mapped (``data.columns: {prompt: question}``) before detection.

In evaluation data the answer (``completion`` / ``output`` / last assistant
``content``) may be a list of strings: several references for one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmtune.data.example import ANSWER_FIELDS, Example, _RowError, _text, checked_turn
from lmtune.data.preference import preference_example
from lmtune.data.rows import FILE_SUFFIXES, BadLine, RowOrBadLine, _describe, _rows_of  # noqa: F401 (re-exported)
from lmtune.errors import DataError

MAX_ERRORS = 10
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
COT_ANSWER = "{rationale}\n\nAnswer: {answer}"
PREFERENCE_HOOK = ("preference", "hh_rlhf", "kto", "prompt_only")  # shapes read by lmtune.data.preference

# shape -> the fields that identify it, in detection order (preference shapes before the ones whose
# fields they share, alpaca before input_output; prompt_only last: a row with a prompt and no answer).
SHAPES: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "hh_rlhf": ("chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "cot": ("question", "rationale", "answer"),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "input_output": ("input", "output"),
    "prompt_only": ("prompt",),
}


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
    for shape, keys in SHAPES.items():
        if all(k in row for k in keys) and not (shape == "prompt_only" and any(k in row for k in ANSWER_FIELDS)):
            return shape
    return None


def _mixed_shapes(row: dict[str, Any], shape: str, detected_at: str | None) -> str | None:
    """A row of another shape than the file's first row (one shape per source)."""
    other = _shape_of(row)
    if detected_at is None or other in (None, shape, "prompt_only"):  # prompt_only: a row missing its answer
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
        "question+rationale+answer | prompt+chosen+rejected | chosen+rejected | prompt+completion+label | prompt "
        "(map other names with data.columns)"
    )


def to_example(row: dict[str, Any], shape: str) -> Example:
    if shape == "text":
        return Example(text=_text(row, "text", allow_empty=True))
    if shape in PREFERENCE_HOOK:
        return preference_example(row, shape)
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
        role, content = checked_turn(turn, where)
        if role == "assistant" and i == len(turns) - 1 and isinstance(content, list):
            answers = _answers(turn, "content")  # several references for the final answer
            content = answers[0]
        elif not isinstance(content, str) or (role != "assistant" and not content.strip()):
            raise _RowError(f"{where}.content': expected non-empty text, found {_describe(content)}")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise _RowError("field 'messages': the last turn must be the assistant's answer")
    return Example(messages=tuple(clean), references=answers or (clean[-1]["content"],))
