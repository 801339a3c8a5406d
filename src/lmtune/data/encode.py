"""`Example` -> token ids and labels, with the model's own tokenizer.

Two prompt layouts:

* ``chat`` — the tokenizer's chat template (instruct models).  The rendered
  conversation is split into segments by rendering growing prefixes of it, so
  exactly the assistant turns (including the template's end-of-turn token) are
  trained on, whatever the template looks like.
* ``plain`` — for base models without a template::

      ### Instruction:
      {prompt}

      ### Response:
      {answer}<eos>

The answer always ends with the end-of-sequence token and that token carries a
label, also when the pad token is the EOS token: the plain recipe
(``pad_token = eos_token`` + ``DataCollatorForLanguageModeling``) masks every
EOS as padding and its model never learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.data.formats import Example
from lmtune.errors import DataError

IGNORE = -100
PLAIN_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


class Encoder:
    """Renders and tokenises examples for one tokenizer and one layout.

    Args:
        tokenizer: the model's tokenizer (its pad token is set by `lmtune.models`).
        template: ``chat``, ``plain`` or ``auto`` (chat when the tokenizer has a template).
        system_prompt: system message put first in the chat layout. None keeps the template's default;
            "" asks for none: the conversation is rendered without a system turn, or with an empty one
            where that is shorter (templates that add a default system message when there is none).
        max_length: tokens kept per example (longer ones are cut at the end).
        train_on_prompt: give prompt tokens labels too.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str = "auto",
        system_prompt: str | None = None,
        max_length: int = 512,
        train_on_prompt: bool = False,
    ):
        if template == "auto":
            template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataError("data.template: 'chat' asked for, but this tokenizer has no chat template; use 'plain'")
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no end-of-sequence token; lmtune needs one to teach the model to stop")
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.train_on_prompt = train_on_prompt
        self._empty_system_turn = template == "chat" and system_prompt == "" and self._empty_turn_is_shorter()

    # ------------------------------------------------------------------ rendering

    def segments(self, example: Example) -> list[Segment]:
        """The example as text pieces, each marked trained or not."""
        if example.text is not None:
            return [Segment(example.text + self.tokenizer.eos_token, True)]
        if self.template == "chat":
            return self._chat_segments(list(self._with_system(example.messages)))
        return self._plain_segments(example.messages)

    def _with_system(self, messages: tuple[dict[str, str], ...]) -> tuple[dict[str, str], ...]:
        if self.system_prompt is None or messages[0]["role"] == "system":
            return messages
        if self.system_prompt == "" and not self._empty_system_turn:
            return messages
        return ({"role": "system", "content": self.system_prompt}, *messages)

    def _empty_turn_is_shorter(self) -> bool:
        """Whether an empty system turn renders shorter than none (the template adds a default one)."""
        turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        try:
            with_empty = self._render([{"role": "system", "content": ""}, *turns], generation_prompt=False)
        except Exception:  # noqa: BLE001 - templates that refuse a system turn raise their own errors
            return False
        return len(with_empty) < len(self._render(turns, generation_prompt=False))

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _chat_segments(self, messages: list[dict[str, str]]) -> list[Segment]:
        out: list[Segment] = []
        done = ""  # text rendered so far
        for i, turn in enumerate(messages):
            if turn["role"] != "assistant":
                continue
            prompt = self._render(messages[:i], generation_prompt=True)
            full = self._render(messages[: i + 1], generation_prompt=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise DataError(
                    "the tokenizer's chat template does not render conversations prefix by prefix, "
                    "so answer tokens cannot be told apart; set data.template: plain"
                )
            out.append(Segment(prompt[len(done) :], False))
            out.append(Segment(self._ensure_eos(full[len(prompt) :]), True))
            done = full
        return out

    def _plain_segments(self, messages: tuple[dict[str, str], ...]) -> list[Segment]:
        out: list[Segment] = []
        pending: list[str] = []
        for turn in messages:
            if turn["role"] == "assistant":
                prompt = "\n\n".join(pending)
                out.append(Segment(PLAIN_PROMPT.format(prompt=prompt), False))
                out.append(Segment(turn["content"] + self.tokenizer.eos_token, True))
                pending = []
            else:
                pending.append(turn["content"])
        return out

    def _ensure_eos(self, answer: str) -> str:
        eos = self.tokenizer.eos_token
        return answer if eos in answer else answer + eos

    # ------------------------------------------------------------------ tokenising

    def _ids(self, text: str, first: bool) -> list[int]:
        # Special tokens (BOS) only at the very start, and never in the chat layout,
        # whose template writes its own.
        special = first and self.template == "plain"
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def encode(self, example: Example, truncate: bool = True) -> dict[str, list[int]]:
        """``input_ids`` and ``labels`` (-100 where no loss is taken), cut at ``max_length`` if ``truncate``."""
        input_ids: list[int] = []
        labels: list[int] = []
        for i, seg in enumerate(self.segments(example)):
            ids = self._ids(seg.text, first=i == 0)
            input_ids += ids
            labels += ids if (seg.trained or self.train_on_prompt) else [IGNORE] * len(ids)
        if truncate:
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        return {"input_ids": input_ids, "labels": labels}

    def prompt_ids(self, example: Example) -> list[int]:
        """Tokens the model is given to generate the final answer (everything before it)."""
        segs = self.segments(example)
        ids: list[int] = []
        for i, seg in enumerate(segs[:-1]):
            ids += self._ids(seg.text, first=i == 0)
        if len(segs) == 1:  # plain text: nothing to answer
            return []
        return ids

    def question_ids(self, prompt: str) -> list[int]:
        """Tokens that ask the model to answer one user message (for ``lmtune generate``)."""
        turns = ({"role": "user", "content": prompt}, {"role": "assistant", "content": "-"})
        return self.prompt_ids(Example(messages=turns))

    def prompt_text(self, example: Example) -> str:
        return "".join(s.text for s in self.segments(example)[:-1])
