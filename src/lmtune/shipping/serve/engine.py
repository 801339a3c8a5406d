"""The model behind ``lmtune serve``: prompts, the context check, and ``model.generate`` on one worker thread.

Built on transformers' public API only (``model.generate``, a ``BaseStreamer``, ``StoppingCriteria``),
not on ``transformers serve``'s internals (``transformers.cli.serving``): those are private, and their
model manager and engine changed in 5.25, which pinned lmtune to one minor release of transformers.

One generation runs at a time, on a single worker thread: concurrent requests wait their turn in
its queue (none is dropped) and the server's event loop is never blocked by a generation.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation import BaseStreamer, StoppingCriteria

from lmtune.errors import ExportError
from lmtune.shipping.serve.request import BadRequest, Request, Sampling


@dataclass
class Job:
    """One request's generation, ready to run."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    cancelled: threading.Event = field(default_factory=threading.Event)  # the client went away


@dataclass(frozen=True)
class Outcome:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """A loaded model and tokenizer answering `Request`s one at a time."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.context = context_length(model)
        self.end_ids = end_of_answer_ids(model, tokenizer)
        self.closing = threading.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmtune-serve-generate")

    @classmethod
    def load(cls, folder: str) -> Engine:
        """The model in ``folder`` through lmtune's own loader (what ``lmtune generate`` and ``chat`` use)."""
        from lmtune.config import ModelConfig
        from lmtune.models import load_model

        try:
            model, tokenizer, _ = load_model(ModelConfig(name=folder), argument="MODEL")  # serve's argument
        except OSError as e:
            raise ExportError(f"{folder}: cannot load the model to serve ({e})") from None
        if torch.cuda.is_available():
            model = model.to("cuda")
        return cls(model.eval(), tokenizer)

    def close(self) -> None:
        """Stop the generation under way and drop the queued ones (the server is shutting down)."""
        self.closing.set()
        self.worker.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------------- before the queue

    def prepare(self, request: Request) -> Job:
        """The prompt's token ids and the number of new tokens allowed; BadRequest when they do not fit."""
        ids = self.prompt_ids(request)
        return Job(ids, self.new_token_budget(len(ids), request), request.sampling)

    def prompt_ids(self, request: Request) -> list[int]:
        if request.kind == "completion":
            return self.tokenizer(request.text_or_messages)["input_ids"]
        if not getattr(self.tokenizer, "chat_template", None):
            raise BadRequest("this model has no chat template: send its prompt to /v1/completions", "messages")
        try:
            # The template adds the special tokens itself; the run's system prompt is its default (lmtune export).
            text = self.tokenizer.apply_chat_template(
                list(request.text_or_messages), add_generation_prompt=True, tokenize=False
            )
        except Exception as e:  # noqa: BLE001 - templates raise what they like ("roles must alternate" ...)
            raise BadRequest(f"the model's chat template cannot lay out these messages: {e}", "messages") from None
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def new_token_budget(self, prompt_tokens: int, request: Request) -> int:
        asked = request.sampling.max_tokens
        if self.context is None:
            return asked or self.model.generation_config.max_new_tokens or FALLBACK_MAX_TOKENS
        if asked is None and prompt_tokens >= self.context:
            raise context_error(
                f"This model's maximum context length is {self.context} tokens, and there are {prompt_tokens} "
                f"tokens in the {request.prompt_param} alone. Please shorten the {request.prompt_param}.",
                request,
            )
        if asked is not None and prompt_tokens + asked > self.context:
            raise context_error(
                f"This model's maximum context length is {self.context} tokens. However, you requested "
                f"{prompt_tokens + asked} tokens ({prompt_tokens} in the {request.prompt_param}, {asked} in the "
                f"completion). Please reduce the length of the {request.prompt_param} or completion.",
                request,
            )
        return asked or self.context - prompt_tokens

    # ----------------------------------------------------------------------- through the queue

    async def complete(self, job: Job) -> Outcome:
        """The whole answer, once generated."""
        return await asyncio.wrap_future(self.worker.submit(self.run, job, lambda _text: None))

    async def stream(self, job: Job) -> AsyncIterator[str | Outcome]:
        """The answer's text piece by piece as it is generated, then its `Outcome`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def send(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the event loop has closed (server shutdown): nobody is listening
                job.cancelled.set()

        future = self.worker.submit(self.run, job, send)
        future.add_done_callback(lambda _f: send(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            yield await asyncio.wrap_future(future)
        finally:
            job.cancelled.set()  # a client that went away stops its generation, or its turn in the queue

    # ----------------------------------------------------------------------- on the worker thread

    def run(self, job: Job, emit: Callable[[str], None]) -> Outcome:
        """Generate ``job``'s answer, passing its text to ``emit`` as it comes (worker thread only)."""
        answer = AnswerText(self.tokenizer, job.sampling.stop, emit)
        if job.cancelled.is_set() or self.closing.is_set():
            return Outcome("", "stop", len(job.prompt_ids), 0)
        kwargs = sampling_kwargs(job.sampling, self.model.generation_config)
        if kwargs["do_sample"]:
            # Seeded here, on the only thread that generates: the same seed and prompt give the same text.
            if job.sampling.seed is not None:
                torch.manual_seed(job.sampling.seed)
            else:
                torch.seed()  # a fresh random seed: an unseeded request must not replay the last seeded one
        inputs = torch.tensor([job.prompt_ids], device=self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=job.max_new_tokens,
                eos_token_id=self.end_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=answer,
                stopping_criteria=[StopWhen(lambda: answer.stopped or job.cancelled.is_set() or self.closing.is_set())],
                **kwargs,
            )
        new = out[0, inputs.shape[1] :].tolist()
        ended = answer.stopped or bool(new and new[-1] in self.end_ids)
        return Outcome(answer.text, "stop" if ended else "length", len(job.prompt_ids), len(new))


FALLBACK_MAX_TOKENS = 256  # a model whose config gives neither a context length nor max_new_tokens


def context_error(message: str, request: Request) -> BadRequest:
    return BadRequest(message, request.prompt_param, code="context_length_exceeded")


def context_length(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    length = getattr(config, "max_position_embeddings", None)
    return length if isinstance(length, int) and length > 0 else None


def end_of_answer_ids(model: Any, tokenizer: Any) -> list[int]:
    """``generation_config.eos_token_id`` (lmtune export writes the end-of-turn tokens there), plus the
    template's own end-of-turn token for a model folder that was not exported by lmtune."""
    from lmtune.shipping.merge import end_of_turn_ids

    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, list | tuple) else ([eos] if eos is not None else [])
    return ids + [i for i in end_of_turn_ids(tokenizer) if i not in ids]


def sampling_kwargs(sampling: Sampling, defaults: Any) -> dict[str, Any]:
    """``model.generate`` arguments for ``sampling``; what the request leaves out comes from ``defaults``
    (the model's generation_config) only where that config samples, as in vLLM."""
    samples_by_default = bool(defaults.do_sample)
    temperature = sampling.temperature
    if temperature is None:
        temperature = (defaults.temperature or 1.0) if samples_by_default else 0.0
    if temperature == 0:
        # Greedy; the knobs are passed as None so a sampling generation_config neither warns nor applies them.
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    top_p = sampling.top_p if sampling.top_p is not None else (defaults.top_p if samples_by_default else None)
    top_k = sampling.top_k if sampling.top_k is not None else (defaults.top_k if samples_by_default else None)
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None}


# --------------------------------------------------------------------------- during generation


class StopWhen(StoppingCriteria):
    """Ends generation once ``done()``: a stop string was found, the client went away, or the server stops."""

    def __init__(self, done: Callable[[], bool]) -> None:
        self.done = done

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return torch.full((input_ids.shape[0],), self.done(), dtype=torch.bool, device=input_ids.device)


class AnswerText(BaseStreamer):
    """A streamer for ``model.generate``: the answer's text, cut before the first stop string, passed on
    as it grows.

    The new tokens are decoded as a whole each time (not piece by piece), so the pieces join into the
    plain decode of the answer, and a streamed request gets the text of the same request unstreamed
    (both go through here). A tail that may begin a stop string, or a character whose bytes are not
    all there yet, waits for the next token.
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], emit: Callable[[str], None]) -> None:
        self.tokenizer, self.stops, self.emit = tokenizer, stops, emit
        self.ids: list[int] = []
        self.text = ""  # passed on so far
        self.stopped = False  # a stop string was found
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate passes the prompt first
            self.prompt_seen = True
            return
        if not self.stopped:
            self.ids.extend(value.reshape(-1).tolist())
            self.advance(final=False)

    def end(self) -> None:
        if not self.stopped:
            self.advance(final=True)

    def advance(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        cut = first_stop(text, self.stops)
        if cut is not None:
            text, self.stopped = text[:cut], True
        elif not final:
            text = text[: len(text) - stop_prefix_length(text, self.stops)]
        if text.startswith(self.text):
            new = text[len(self.text) :]
        elif final:
            # Rare: a later token changed text already passed on (a tokenizer's space clean-up, say), which
            # cannot be taken back; the rest goes after it, so streamed and whole answers still agree.
            new = text[len(os.path.commonprefix([text, self.text])) :]
        else:
            return
        if new:
            self.emit(new)
            self.text += new


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that a stop string starts with (it may complete later)."""
    return max((n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if s.startswith(text[-n:])),
               default=0)  # fmt: skip
