"""What a request asks for: an OpenAI chat or completion body, checked field by field into a `Request`.

Every field is honoured, harmless metadata (``user``, ``metadata``), or refused with a 400 that names
it: a client that asks for ``n=3``, log-probabilities or tools must learn that it did not get them,
not read a reply that silently ignored them.  A refused field sent at its neutral value (``n: 1``,
``presence_penalty: 0``, ``logprobs: false`` ...) asks for nothing and passes; ``null`` means "not
sent", as in OpenAI's API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

MAX_STOPS = 4  # as OpenAI's API
CHAT_ROLES = ("system", "developer", "user", "assistant")

COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options"}
HONOURED = {
    "chat": COMMON | {"messages", "max_completion_tokens"},
    "completion": COMMON | {"prompt"},
}
METADATA = {"user", "metadata"}  # they change nothing in the answer

# field -> (is its value neutral?, what lmtune serve does instead)
NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v == 1, "one choice per request (n=1)"),
    "best_of": (lambda v: v == 1, "one candidate per request (best_of=1)"),
    "logprobs": (lambda v: v in (False, 0), "no log-probabilities"),
    "top_logprobs": (lambda v: v == 0, "no log-probabilities"),
    "presence_penalty": (lambda v: v == 0, "no presence penalty (0)"),
    "frequency_penalty": (lambda v: v == 0, "no frequency penalty (0)"),
    "logit_bias": (lambda v: v == {}, "no logit bias"),
    "response_format": (lambda v: v == {"type": "text"}, 'plain text ({"type": "text"})'),
    "tools": (lambda v: v == [], "no tools"),
    "tool_choice": (lambda v: v == "none", 'no tool calls ("none")'),
    "echo": (lambda v: v is False, "no echo of the prompt"),
    "suffix": (lambda v: v == "", "no suffix"),
    "store": (lambda v: v is False, "nothing stored"),
}


class BadRequest(Exception):
    """A request the server refuses; becomes an OpenAI-style JSON error with ``status``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass(frozen=True)
class Sampling:
    """How to pick the answer's tokens; None: the request left it to the model's generation_config."""

    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    top_k: int | None = None  # 0: off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None  # None: up to the end of the context


@dataclass(frozen=True)
class Request:
    kind: Literal["chat", "completion"]
    text_or_messages: str | tuple[dict[str, str], ...]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts
    model: str | None = None

    @property
    def prompt_param(self) -> str:
        """The field that holds the prompt, named in errors about it."""
        return "messages" if self.kind == "chat" else "prompt"


# --------------------------------------------------------------------------- the two bodies


def parse_chat(body: dict[str, Any]) -> Request:
    """A ``/v1/chat/completions`` body, or BadRequest naming the first field at fault."""
    body = sent_fields(body)
    refuse_unhonoured(body, HONOURED["chat"])
    limits = [k for k in ("max_tokens", "max_completion_tokens") if k in body]
    if len(limits) == 2 and body["max_tokens"] != body["max_completion_tokens"]:
        raise BadRequest("give one of 'max_tokens' and 'max_completion_tokens' (they differ)", "max_tokens")
    sampling = parse_sampling(body, limits[-1] if limits else "max_tokens")
    return Request("chat", parse_messages(body.get("messages")), sampling, *parse_streaming(body), parse_model(body))


def parse_completion(body: dict[str, Any]) -> Request:
    """A ``/v1/completions`` body (one text prompt), or BadRequest naming the first field at fault."""
    body = sent_fields(body)
    refuse_unhonoured(body, HONOURED["completion"])
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]  # the openai client may send one prompt as a one-item list
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be a non-empty string (one text prompt per request)", "prompt")
    sampling = parse_sampling(body, "max_tokens")
    return Request("completion", prompt, sampling, *parse_streaming(body), parse_model(body))


def sent_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def refuse_unhonoured(body: dict[str, Any], honoured: set[str]) -> None:
    for key, value in body.items():
        if key in honoured or key in METADATA:
            continue
        if key in NEUTRAL:
            neutral, instead = NEUTRAL[key]
            if not neutral(value):
                raise BadRequest(f"'{key}' is not supported by lmtune serve: it gives {instead}", key)
            continue
        raise BadRequest(f"'{key}' is not supported by lmtune serve", key)


# --------------------------------------------------------------------------- fields


def parse_messages(messages: Any) -> tuple[dict[str, str], ...]:
    """{role, content} turns with text content, for the chat template."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
    return tuple(parse_message(m, f"messages[{i}]") for i, m in enumerate(messages))


def parse_message(message: Any, where: str) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
        raise BadRequest(f"{where}: needs a 'role' among {', '.join(CHAT_ROLES)}", f"{where}.role")
    if extra := sorted(set(message) - {"role", "content", "name"}):
        raise BadRequest(
            f"{where}.{extra[0]}: not supported by lmtune serve (text messages only)", f"{where}.{extra[0]}"
        )
    # "developer" is OpenAI's newer name for the system role; chat templates know only "system".
    role = "system" if message["role"] == "developer" else message["role"]
    return {"role": role, "content": message_text(message.get("content"), f"{where}.content")}


def message_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: must be a string or a list of text parts", where)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise BadRequest(f"{where}[{j}]: only text parts are supported, not {kind!r}", f"{where}[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def parse_sampling(body: dict[str, Any], limit_key: str) -> Sampling:
    max_tokens = body.get(limit_key)
    if max_tokens is not None and not (is_int(max_tokens) and max_tokens >= 1):
        raise BadRequest(f"'{limit_key}' must be a positive integer", limit_key)
    return Sampling(
        temperature=number(body, "temperature", lambda v: 0 <= v <= 2, "between 0 and 2"),
        top_p=number(body, "top_p", lambda v: 0 < v <= 1, "above 0 and at most 1"),
        top_k=integer(body, "top_k", lambda v: v >= 0, "0 (off) or more"),
        seed=integer(body, "seed", lambda v: -(2**63) <= v < 2**64, "a 64-bit integer"),
        stop=parse_stop(body.get("stop")),
        max_tokens=max_tokens,
    )


def parse_stop(stop: Any) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return ()
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest(f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} of them", "stop")
    return tuple(stops)


def parse_streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise BadRequest("'stream_options': only include_usage is supported", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise BadRequest("'stream_options.include_usage' must be true or false", "stream_options")
    return stream, include_usage


def parse_model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", "model")
    return model


def number(body: dict[str, Any], key: str, ok: Callable[[float], bool], wanted: str) -> float | None:
    v = body.get(key)
    if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and ok(v)):
        raise BadRequest(f"'{key}' must be a number {wanted}, got {v!r}", key)
    return v


def integer(body: dict[str, Any], key: str, ok: Callable[[int], bool], wanted: str) -> int | None:
    v = body.get(key)
    if v is not None and not (is_int(v) and ok(v)):
        raise BadRequest(f"'{key}' must be an integer, {wanted}, got {v!r}", key)
    return v


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
