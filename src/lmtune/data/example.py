"""`Example`, what every data shape becomes, and the row checks the shapes share.

Both ``formats`` (the shapes people have) and ``preference`` (pairs, KTO answers, prompt-only rows) build
on this module; ``formats`` hands the preference shapes to ``preference``, which never imports it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lmtune.data.rows import _describe

ROLES = ("system", "user", "assistant")
ANSWER_FIELDS = ("completion", "chosen", "rejected", "output", "response")  # never in a prompt_only row


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
    rejected: str | None = None  # a preference pair's dispreferred answer (the preferred one ends ``messages``)
    label: bool | None = None  # KTO: whether the final answer is desirable
    extra: tuple[tuple[str, Any], ...] = ()  # a prompt_only row's other fields (GRPO reward functions read them)

    @property
    def prompt(self) -> str:
        """The last user turn (what a person would read as "the question")."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def prompt_messages(self) -> tuple[dict[str, str], ...]:
        """Every turn the model is given: all but the final assistant answer (all of a prompt_only row)."""
        return self.messages[:-1] if self.messages and self.messages[-1]["role"] == "assistant" else self.messages

    @property
    def is_preference(self) -> bool:
        return self.rejected is not None

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.extra)

    def each_reference(self) -> list[Example]:
        """One example per reference, the final answer replaced: how every held-out answer is scored."""
        if self.text is not None or len(self.references) <= 1:
            return [self]
        head, last = self.messages[:-1], self.messages[-1]
        return [replace(self, messages=(*head, {**last, "content": r}), references=(r,)) for r in self.references]


# --------------------------------------------------------------------------- fields


class _RowError(ValueError):
    pass


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


def checked_turn(turn: Any, where: str) -> tuple[str, Any]:
    """(role, content) of a ``{role, content}`` turn; ``where`` is ``"field 'key[i]"`` for the error."""
    if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
        raise _RowError(f"{where}': expected {{role, content}}, found {_describe(turn)}")
    if turn["role"] not in ROLES:
        raise _RowError(f"{where}.role': unknown role {turn['role']!r} (expected one of {', '.join(ROLES)})")
    return turn["role"], turn["content"]
