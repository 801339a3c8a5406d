"""Preference data: pairs, unpaired (KTO) answers and prompt-only rows -> `Example`s -> TRL's rows.

Shapes (detected from the first row's keys by `lmtune.data.formats`, or named by ``data.format``):

``preference``  ``prompt`` + ``chosen`` + ``rejected``.  ``prompt`` is text or a list of ``{role, content}``
                messages ending with a user turn; ``chosen`` / ``rejected`` are text or a list holding one
                assistant message (TRL's conversational format).  When ``chosen`` and ``rejected`` are whole
                conversations (UltraFeedback-binarized style) the prompt is taken from them, as for ``hh_rlhf``.
``hh_rlhf``     ``chosen`` + ``rejected`` only, each a whole conversation: an Anthropic HH-RLHF transcript
                (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) or a list of messages.  The prompt is every turn
                the two share up to their last shared user turn; each must then hold exactly one assistant
                answer.  Turns are compared whole (TRL's ``extract_prompt`` compares characters and cuts
                mid-answer when both answers begin with the same words).
``kto``         ``prompt`` + ``completion`` + ``label`` (a JSON boolean: is the answer desirable).
``prompt_only`` ``prompt`` and no answer field (GRPO); every other field is kept in ``Example.extra``, and a
                text ``answer`` becomes the reference.

Any row may carry a ``system`` field, as in every other shape.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from lmtune.data.example import ANSWER_FIELDS, Example, _RowError, _text, checked_turn
from lmtune.data.rows import _describe
from lmtune.errors import DataError

PAIRED_SHAPES = ("preference", "hh_rlhf")
UNPAIRED_SHAPES = ("kto",)
PREFERENCE_SHAPES = (*PAIRED_SHAPES, *UNPAIRED_SHAPES)
PROMPT_SHAPES = ("prompt_only",)
PAIRED_OBJECTIVES = ("dpo", "orpo", "simpo", "reward")
OBJECTIVES = (*PAIRED_OBJECTIVES, "kto", "grpo")
_NOT_EXTRA = ("prompt", "system", "task")  # a prompt_only row's fields that are not its extras
_HH_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Turns = tuple[dict[str, str], ...]


def shape_family(shape: str) -> str:
    """``text`` | ``paired`` | ``unpaired`` | ``prompt`` | ``conversation`` (every supervised shape)."""
    if shape == "text":
        return "text"
    if shape in PAIRED_SHAPES:
        return "paired"
    if shape in UNPAIRED_SHAPES:
        return "unpaired"
    return "prompt" if shape in PROMPT_SHAPES else "conversation"


def data_problem(shape: str, objective: str) -> str | None:
    """Why data of ``shape`` cannot train ``objective`` (``sft`` or one of `OBJECTIVES`); None when it can.

    ``sft`` on pairs trains on the chosen answers; ``kto`` takes pairs (unpaired with `to_unpaired`);
    ``grpo`` takes the prompt of any shape but ``text``.
    """
    family = shape_family(shape)
    if objective == "sft":
        if family == "prompt":
            return (
                f"objective sft needs answers, and '{shape}' rows have none (a prompt and other fields); "
                "name the answer field with data.columns (e.g. {completion: answer}), or use objective grpo"
            )
        if family == "unpaired":
            return "objective sft would train on every answer, and 'kto' rows include undesirable ones; use kto"
        return None
    if objective in PAIRED_OBJECTIVES and family != "paired":
        return (
            f"objective {objective} needs preference pairs (prompt + chosen + rejected, or chosen + rejected "
            f"conversations), and this data is '{shape}'"
        )
    if objective == "kto" and family not in ("paired", "unpaired"):
        return (
            "objective kto needs answers labelled desirable or not (prompt + completion + label) or pairs, "
            f"and this data is '{shape}'"
        )
    if objective == "grpo" and family == "text":
        return "objective grpo needs prompts, and 'text' rows have none"
    return None


def preference_example(row: dict[str, Any], shape: str) -> Example:
    """One row of a preference shape (or ``prompt_only``) -> an `Example`; raises ``_RowError``."""
    system = _text(row, "system", required=False)
    if shape == "preference":
        if _is_conversation(row.get("chosen")) and _is_conversation(row.get("rejected")):
            # whole conversations (UltraFeedback-binarized): the ``prompt`` field repeats their first turn(s)
            prompt, chosen, rejected = _shared_prompt(row)
        else:
            prompt, chosen, rejected = _prompt(row), _answer(row, "chosen"), _answer(row, "rejected")
            if chosen.strip() == rejected.strip():
                raise _RowError("field 'rejected': the same answer as 'chosen' (a pair needs two different answers)")
        example = _answered(prompt, chosen, rejected=rejected)
    elif shape == "hh_rlhf":
        prompt, chosen, rejected = _shared_prompt(row)
        example = _answered(prompt, chosen, rejected=rejected)
    elif shape == "kto":
        prompt, completion = _prompt(row), _answer(row, "completion")
        example = _answered(prompt, completion, label=_label(row))
    elif shape == "prompt_only":
        example = _prompt_only(row)
    else:
        raise ValueError(f"unknown preference shape {shape!r}")
    if system and example.messages[0]["role"] != "system":
        example = replace(example, messages=({"role": "system", "content": system}, *example.messages))
    return example


def _answered(prompt: Turns, answer: str, **fields: Any) -> Example:
    return Example(messages=(*prompt, {"role": "assistant", "content": answer}), references=(answer,), **fields)


# --------------------------------------------------------------------------- fields


def _prompt(row: dict[str, Any], key: str = "prompt") -> Turns:
    """``prompt`` as turns: text is one user turn; a list of messages must end with a user turn."""
    if key not in row:
        raise _RowError(f"field '{key}': missing")
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise _RowError(f"field '{key}': empty text")
        return ({"role": "user", "content": value},)
    if not isinstance(value, list) or not value:
        raise _RowError(
            f"field '{key}': expected text or a non-empty list of {{role, content}}, found {_describe(value)}"
        )
    turns = _messages(value, key)
    if turns[-1]["role"] != "user":
        raise _RowError(f"field '{key}': the last turn must be the user's (the answer follows it)")
    return turns


def _messages(value: list[Any], key: str) -> Turns:
    turns = []
    for i, turn in enumerate(value):
        where = f"field '{key}[{i}]"
        role, content = checked_turn(turn, where)
        if not isinstance(content, str) or (role != "assistant" and not content.strip()):
            raise _RowError(f"{where}.content': expected non-empty text, found {_describe(content)}")
        turns.append({"role": role, "content": content})
    return tuple(turns)


def _answer(row: dict[str, Any], key: str) -> str:
    """An answer: non-empty text, or a list holding one assistant message (TRL's conversational format)."""
    if key not in row:
        raise _RowError(f"field '{key}': missing")
    value = row[key]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") != "assistant":
            raise _RowError(f"field '{key}[0].role': expected 'assistant', found {value[0].get('role')!r}")
        value, key = value[0].get("content"), f"{key}[0].content"
    if not isinstance(value, str):
        found = f"a list of {len(value)}" if isinstance(value, list) else _describe(value)
        raise _RowError(f"field '{key}': expected text or a list holding one assistant message, found {found}")
    if not value.strip():
        raise _RowError(f"field '{key}': empty text")
    return value


def _label(row: dict[str, Any]) -> bool:
    if "label" not in row:
        raise _RowError("field 'label': missing")
    value = row["label"]
    if not isinstance(value, bool):
        found = repr(value) if isinstance(value, str | int | float) else _describe(value)
        raise _RowError(
            f"field 'label': expected true or false (a JSON boolean: is the completion desirable), found {found}"
        )
    return value


def _prompt_only(row: dict[str, Any]) -> Example:
    for key in ANSWER_FIELDS:
        if key in row:
            raise _RowError(f"field '{key}': a prompt_only row has no answer field (is this file another shape?)")
    prompt = _prompt(row)
    answer = row.get("answer")
    references = (answer,) if isinstance(answer, str) and answer.strip() else ()
    extra = tuple((k, v) for k, v in row.items() if k not in _NOT_EXTRA)
    return Example(messages=prompt, references=references, extra=extra)


# --------------------------------------------------------------------------- whole conversations


def _is_conversation(value: Any) -> bool:
    """A list of messages that is more than one assistant answer (it holds the prompt too)."""
    return isinstance(value, list) and any(isinstance(m, dict) and m.get("role") != "assistant" for m in value)


def _turns(row: dict[str, Any], key: str) -> list[dict[str, str]]:
    """A whole conversation (HH-RLHF transcript or list of messages) -> turns, each one's text stripped."""
    if key not in row:
        raise _RowError(f"field '{key}': missing")
    value = row[key]
    if isinstance(value, list) and value:
        return [{"role": m["role"], "content": m["content"].strip()} for m in _messages(value, key)]
    if not isinstance(value, str) or not value.strip():
        raise _RowError(
            f"field '{key}': expected a Human/Assistant transcript or a list of messages, found {_describe(value)}"
        )
    text = value.lstrip()
    markers = list(_HH_MARKER.finditer(text))
    if not markers or markers[0].start() != 0:
        raise _RowError(
            f"field '{key}': expected a transcript of '\\n\\nHuman: ...' and '\\n\\nAssistant: ...' turns, "
            "found text before the first 'Human:'"
        )
    ends = [m.start() for m in markers[1:]] + [len(text)]
    return [
        {"role": _HH_ROLES[m.group(1)], "content": text[m.end() : end].strip()}
        for m, end in zip(markers, ends, strict=True)
    ]


def _shared_prompt(row: dict[str, Any]) -> tuple[Turns, str, str]:
    """(prompt turns, chosen, rejected) from two whole conversations, compared turn by turn."""
    chosen, rejected = _turns(row, "chosen"), _turns(row, "rejected")
    same = 0
    while same < min(len(chosen), len(rejected)) and chosen[same] == rejected[same]:
        same += 1
    users = [i for i in range(same) if chosen[i]["role"] == "user"]
    if not users:
        raise _RowError("field 'rejected': shares no user (Human) turn with 'chosen', so there is no common prompt")
    start = users[-1] + 1
    answers = []
    for key, turns in (("chosen", chosen), ("rejected", rejected)):
        rest = turns[start:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            found = f"{_turn_count(len(rest))} ({', '.join(t['role'] for t in rest)})" if rest else "none"
            raise _RowError(
                f"field '{key}': after the prompt the two share ({_turn_count(start)}), "
                f"expected one assistant answer, found {found}"
            )
        if not rest[0]["content"]:
            raise _RowError(f"field '{key}': empty answer (the last assistant turn has no text)")
        answers.append(rest[0]["content"])
    if answers[0] == answers[1]:
        raise _RowError("field 'rejected': the same answer as 'chosen' (a pair needs two different answers)")
    return tuple(chosen[:start]), answers[0], answers[1]


def _turn_count(n: int) -> str:
    return f"{n} turn" if n == 1 else f"{n} turns"


# --------------------------------------------------------------------------- conversions


def to_unpaired(examples: list[Example]) -> list[Example]:
    """Each pair -> two KTO examples: the chosen answer (label True) and the rejected one (label False).

    Both keep the pair's prompt, task and source; every other example is passed through unchanged.
    """
    out = []
    for ex in examples:
        if not ex.is_preference:
            out.append(ex)
            continue
        assert ex.rejected is not None
        out.append(replace(ex, rejected=None, label=True))
        out.append(replace(_with_answer(ex, ex.rejected), rejected=None, label=False))
    return out


def _with_answer(ex: Example, answer: str) -> Example:
    return replace(ex, messages=(*ex.prompt_messages, {"role": "assistant", "content": answer}), references=(answer,))


def trl_rows(examples: list[Example], objective: str) -> list[dict[str, Any]]:
    """Rows in TRL's conversational format for the trainer of ``objective``.

    * ``dpo`` / ``orpo`` / ``simpo`` / ``reward``: ``{"prompt": [messages], "chosen": [assistant message],
      "rejected": [assistant message]}`` (preference examples only).
    * ``kto``: ``{"prompt": [...], "completion": [assistant message], "label": bool}``; pairs are unpaired first.
    * ``grpo``: ``{"prompt": [...], **extras}``, plus ``"answer"`` (the first reference) when the example has
      one and no ``answer`` extra; every row gets the same keys (``None`` where a row lacks one).

    A system message, when there is one, is the first prompt message.

    Raises:
        DataError: examples the objective cannot use (``text`` rows; non-pairs for the paired objectives).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (expected one of {', '.join(OBJECTIVES)})")
    for ex in examples:
        _check_usable(ex, objective)
    if objective in PAIRED_OBJECTIVES:
        return [
            {"prompt": _listed(ex.prompt_messages), "chosen": _reply(_final(ex)), "rejected": _reply(ex.rejected or "")}
            for ex in examples
        ]
    if objective == "kto":
        return [
            {"prompt": _listed(ex.prompt_messages), "completion": _reply(_final(ex)), "label": ex.label}
            for ex in to_unpaired(examples)
        ]
    rows = []
    for ex in examples:
        row = {"prompt": _listed(ex.prompt_messages), **ex.extras}
        if "answer" not in row and ex.references:
            row["answer"] = ex.references[0]
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k) for k in keys} for row in rows]


def _check_usable(ex: Example, objective: str) -> None:
    where = f"{ex.source}: " if ex.source else ""
    if ex.text is not None:
        raise DataError(f"{where}a 'text' row has no prompt; objective '{objective}' needs prompts")
    if objective in PAIRED_OBJECTIVES and not ex.is_preference:
        raise DataError(
            f"{where}objective '{objective}' needs preference pairs (prompt + chosen + rejected, or chosen + "
            "rejected conversations); this row has no rejected answer"
        )
    if objective == "kto" and not ex.is_preference and ex.label is None:
        raise DataError(
            f"{where}objective 'kto' needs answers labelled desirable or not (prompt + completion + label) "
            "or preference pairs; this row has neither"
        )


def _final(ex: Example) -> str:
    return ex.messages[-1]["content"]


def _listed(turns: Turns) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in turns]


def _reply(answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}]


def completion_text(completion: Any) -> str:
    """The text of a TRL prompt or completion: plain, or the turns of a conversational one (``_reply``'s shape).

    Data checks and GRPO's reward functions both read completions; it lives here, with the rows they read.
    """
    if isinstance(completion, list):  # conversational: the assistant turn(s) generated
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)
