"""The HTTP side of ``lmtune serve``: OpenAI's routes, response objects and errors, on FastAPI.

Answers are shaped like OpenAI's (``chat.completion``, ``chat.completion.chunk``, ``text_completion``,
``usage``), streamed as server-sent events that end with ``data: [DONE]``. Every refused request is a
4xx JSON error in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) and the server
keeps serving.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmtune.shipping.serve.engine import Engine, Outcome
from lmtune.shipping.serve.request import BadRequest, parse_chat, parse_completion
from lmtune.shipping.serve.request import Request as ApiRequest

logger = logging.getLogger(__name__)


def build_app(engine: Engine, name: str, also_known_as: tuple[str, ...] = ()) -> FastAPI:
    """``/v1/chat/completions``, ``/v1/completions``, ``/v1/models`` and ``/health`` for ``engine``'s model.

    Responses name the model ``name``; a request may name it so, by one of ``also_known_as`` (the path
    given on the command line), or not at all.
    """
    accepted = {name, *also_known_as}
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="lmtune serve", lifespan=lifespan)
    add_error_handlers(app)

    async def answer(body: dict, parse: Callable[[dict], ApiRequest]) -> Any:
        request = parse(body)
        if request.model is not None and request.model not in accepted:
            raise BadRequest(f"The model '{request.model}' does not exist: this server serves '{name}'", "model",
                             status=404, code="model_not_found")  # fmt: skip
        job = engine.prepare(request)
        shape = CHAT if request.kind == "chat" else COMPLETION
        if request.stream:
            events = sse_events(engine.stream(job), shape, name, request.include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(shape.response(new_id(shape), name, await engine.complete(job)))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: dict) -> Any:
        return await answer(body, parse_chat)

    @app.post("/v1/completions")
    async def completions(body: dict) -> Any:
        return await answer(body, parse_completion)

    @app.get("/v1/models")
    def models() -> Any:
        return {"object": "list", "data": [model_object(name, created)]}

    @app.get("/v1/models/{model:path}")
    def model(model: str) -> Any:
        if model not in accepted:
            raise BadRequest(f"The model '{model}' does not exist", "model", status=404, code="model_not_found")
        return model_object(name, created)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    return app


def model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "lmtune"}


# --------------------------------------------------------------------------- errors


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        return openai_error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def not_an_object(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        return openai_error(400, f"the request body must be a JSON object ({first.get('msg', 'invalid')})")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return openai_error(exc.status_code, str(exc.detail))  # unknown routes (404), wrong methods (405)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed")
        return openai_error(500, f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- response objects


class Shape:
    """How one endpoint's answers look: the whole response, and a streamed chunk."""

    def __init__(self, prefix: str, obj: str, chunk_obj: str, whole: Callable, piece: Callable) -> None:
        self.prefix, self.obj, self.chunk_obj, self.whole, self.piece = prefix, obj, chunk_obj, whole, piece

    def response(self, id_: str, model: str, outcome: Outcome) -> dict[str, Any]:
        choice = {"index": 0, **self.whole(outcome.text), "finish_reason": outcome.finish_reason, "logprobs": None}
        return {**header(id_, self.obj, model), "choices": [choice], "usage": usage(outcome)}

    def chunk(self, id_: str, model: str, text: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, **self.piece(text), "finish_reason": finish_reason, "logprobs": None}
        return {**header(id_, self.chunk_obj, model), "choices": [choice]}

    def usage_chunk(self, id_: str, model: str, outcome: Outcome) -> dict[str, Any]:
        return {**header(id_, self.chunk_obj, model), "choices": [], "usage": usage(outcome)}


CHAT = Shape(
    "chatcmpl",
    "chat.completion",
    "chat.completion.chunk",
    whole=lambda text: {"message": {"role": "assistant", "content": text}},
    # the first chunk names the role; the last one (text None) carries only the finish reason
    piece=lambda text: {"delta": {} if text is None else {"content": text}},
)
COMPLETION = Shape(
    "cmpl",
    "text_completion",
    "text_completion",
    whole=lambda text: {"text": text},
    piece=lambda text: {"text": text or ""},
)


def new_id(shape: Shape) -> str:
    return f"{shape.prefix}-{uuid.uuid4().hex}"


def header(id_: str, obj: str, model: str) -> dict[str, Any]:
    return {"id": id_, "object": obj, "created": int(time.time()), "model": model}


def usage(outcome: Outcome) -> dict[str, int]:
    total = outcome.prompt_tokens + outcome.completion_tokens
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": total}  # fmt: skip


async def sse_events(
    items: AsyncIterator[str | Outcome], shape: Shape, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events: a chunk per piece of text, one with the finish reason, ``[DONE]``."""
    id_ = new_id(shape)
    if shape is CHAT:
        opening = shape.chunk(id_, model, "")
        opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield sse(opening)
    try:
        async for item in items:
            if isinstance(item, str):
                yield sse(shape.chunk(id_, model, item))
                continue
            yield sse(shape.chunk(id_, model, None, item.finish_reason))
            if include_usage:
                yield sse(shape.usage_chunk(id_, model, item))
    except Exception as e:  # noqa: BLE001 - the 200 status has been sent: the error goes in the stream
        logger.exception("streamed generation failed")
        yield sse({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error", "param": None,
                             "code": None}})  # fmt: skip
    yield "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
