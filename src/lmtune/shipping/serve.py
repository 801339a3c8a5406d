"""``lmtune serve RUN_OR_MODEL``: an OpenAI-compatible HTTP server on ``transformers serve``'s engine.

The engine — model loading, chat templates, generation on one inference thread (so
concurrent requests queue rather than drop), SSE streaming, OpenAI response objects — is
transformers' (``transformers[serving]``).  lmtune adds what its own CLI needs around it:
a run folder is merged and exported first (the engine cannot load an adapter-only
folder), requests are checked before they reach the engine so a malformed one gets an
OpenAI-style 400 JSON error instead of a 500, and a busy port is a one-line error.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import Any

from lmtune.errors import ExportError, LmtuneError

logger = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant", "tool")


# --------------------------------------------------------------------------- what to serve


def servable_folder(target: str, echo: Any = print) -> str:
    """A plain model folder (or hub id) the engine can load: runs with adapters are exported first."""
    from lmtune.models import resolve
    from lmtune.shipping.export import EXPORT_RECORD, export

    path = Path(target).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        exported = path / "export"
        if _export_is_current(path, exported / EXPORT_RECORD):
            echo(f"serving the export of {path} in {exported}")
        else:
            echo(f"merging {path} into a plain model folder for serving: {exported}")
            export(path, exported, "hf", None, overwrite=True, echo=echo)
        return str(exported)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ExportError(f"{target}: not a run folder or model folder (no adapter_config.json or config.json)")
    return str(resolve(target))  # HF folders as they are; GGUF files and the embedded model via the dequantised cache


def _export_is_current(run: Path, record: Path) -> bool:
    adapter = run / "adapter_model.safetensors"
    return record.is_file() and adapter.is_file() and record.stat().st_mtime >= adapter.stat().st_mtime


def check_port_free(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ExportError(f"--port {port}: must be between 1 and 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            reason = f"cannot listen on {host}:{port} ({e.strerror})"
            raise ExportError(f"--port {port}: {reason}; choose another --port") from None


def vllm_command(target: str, folder: str) -> str:
    """The equivalent command for GPU users: vLLM serves the adapter itself on top of its base."""
    path = Path(target)
    if (path / "adapter_config.json").is_file():
        import json

        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        return f"vllm serve {base} --enable-lora --lora-modules {path.resolve().name}={path}"
    return f"vllm serve {folder}"


# --------------------------------------------------------------------------- the app


def build_app(folder: str, aliases: tuple[str, ...] = ()) -> Any:
    """A FastAPI app with /v1/chat/completions, /v1/completions, /v1/models and /health for ``folder``."""
    try:
        import torch
        from fastapi import FastAPI, Request
        from fastapi.exceptions import HTTPException, RequestValidationError
        from fastapi.responses import JSONResponse
        from transformers.cli.serving.chat_completion import ChatCompletionHandler
        from transformers.cli.serving.completion import CompletionHandler
        from transformers.cli.serving.model_manager import ModelManager
        from transformers.cli.serving.utils import GenerationState
    except ImportError as e:
        need = "lmtune serve needs transformers[serving] 5.x: pip install 'transformers[serving]'"
        raise ExportError(f"{need} ({e})") from None

    device = "auto" if torch.cuda.is_available() else "cpu"
    manager = ModelManager(device=device, dtype="auto", force_model=folder)
    state = GenerationState()
    chat = ChatCompletionHandler(model_manager=manager, generation_state=state)
    completion = CompletionHandler(model_manager=manager, generation_state=state)
    names = {folder, *aliases}
    app = FastAPI(title="lmtune serve")

    def openai_error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> Any:
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, exc: RequestValidationError) -> Any:
        first = (exc.errors() or [{}])[0]
        return openai_error(400, f"request body is not a JSON object: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Any:
        return openai_error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception) -> Any:
        logger.exception("request failed")
        return openai_error(500, f"{type(exc).__name__}: {exc}", "server_error")

    async def dispatch(handler: Any, body: dict[str, Any], check: Any) -> Any:
        problem = check(body) or check_model(body, names)
        if problem:
            if isinstance(problem[0], int):
                return openai_error(*problem)
            return openai_error(400, problem[0], param=problem[1])
        body.pop("model", None)  # the engine is pinned to the folder; aliases were accepted above
        return await handler.handle_request(body, str(uuid.uuid4()))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: dict) -> Any:
        return await dispatch(chat, body, check_chat_request)

    @app.post("/v1/completions")
    async def completions(body: dict) -> Any:
        return await dispatch(completion, body, check_completion_request)

    @app.get("/v1/models")
    def models() -> Any:
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "owned_by": "lmtune"}
                                                         for n in sorted(names)]})  # fmt: skip

    @app.get("/health")
    def health() -> Any:
        return JSONResponse({"status": "ok"})

    return app


# --------------------------------------------------------------------------- request checks
# Each returns None, or (message, param) for a 400 / (status, message, kind, param) for another status.


def check_model(body: dict[str, Any], names: set[str]) -> tuple | None:
    model = body.get("model")
    if model is not None and model not in names:
        return 404, f"model {model!r} is not served here (this server serves {sorted(names)})", "not_found", "model"
    return None


def check_chat_request(body: dict[str, Any]) -> tuple | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects", "messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"messages[{i}]: needs a 'role' among {', '.join(ROLES)}", f"messages[{i}].role"
        content = m.get("content")
        text_parts = isinstance(content, list) and all(isinstance(p, dict) for p in content)
        if not (isinstance(content, str) or text_parts or (content is None and m.get("tool_calls"))):
            return f"messages[{i}]: 'content' must be a string or a list of content parts", f"messages[{i}].content"
    return check_sampling(body, ("max_tokens", "max_completion_tokens"))


def check_completion_request(body: dict[str, Any]) -> tuple | None:
    prompt = body.get("prompt")
    if not (isinstance(prompt, str) and prompt) and not (
        isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str)
    ):
        return "'prompt' must be a non-empty string (one prompt per request)", "prompt"
    if isinstance(prompt, list):
        body["prompt"] = prompt[0]
    return check_sampling(body, ("max_tokens",))


def check_sampling(body: dict[str, Any], length_keys: tuple[str, ...]) -> tuple | None:
    for key in length_keys:
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            return f"'{key}' must be a positive integer", key
    checks = {
        "temperature": lambda v: 0 <= v <= 2,
        "top_p": lambda v: 0 < v <= 1,
    }
    for key, ok in checks.items():
        v = body.get(key)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not ok(v)):
            return f"'{key}' is out of range", key
    if body.get("n") not in (None, 1):
        return "'n' other than 1 is not supported", "n"
    if body.get("stream") not in (None, True, False):
        return "'stream' must be true or false", "stream"
    return None


# --------------------------------------------------------------------------- the command


def serve(target: str, host: str = "127.0.0.1", port: int = 8000, echo: Any = print) -> None:
    """Serve ``target`` until interrupted (Ctrl-C)."""
    import uvicorn

    check_port_free(host, port)
    folder = servable_folder(target, echo)
    echo(f"loading {folder} ...")
    try:
        app = build_app(folder, aliases=(target, Path(target).name))
    except LmtuneError:
        raise
    except OSError as e:
        raise ExportError(f"{target}: cannot load the model to serve ({e})") from None
    check_port_free(host, port)  # loading took a while: fail cleanly if someone took the port meanwhile
    echo(f"OpenAI-compatible API on http://{host}:{port}/v1 (model name: {Path(target).name!r}); Ctrl-C stops")
    echo(f"on a GPU machine, the same with vLLM: {vllm_command(target, folder)}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
