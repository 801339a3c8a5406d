"""The web app: pages rendered on the server, JSON actions that call the CLI's own functions.

Every problem the user can fix comes back as HTTP 4xx with ``{"error": "lmtune: error: ..."}``, the line
the command line prints; anything else is one line too (HTTP 500), its traceback only in the server's
log. No page loads anything from the network: the script and styles are served from here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from lmtune.config import DATA_FORMATS, EMBEDDED_MODEL
from lmtune.config.loader import describe
from lmtune.errors import ConfigError, LmtuneError
from lmtune.files import atomic_write_text
from lmtune.ui import forms
from lmtune.ui.jobs import UI_FOLDER, Jobs

logger = logging.getLogger(__name__)
PAGES = (("data", "Data"), ("config", "Config"), ("train", "Train"), ("results", "Results"), ("chat", "Chat"))
DEFAULT_CONFIG = "lmtune-ui.yaml"


def make_app(runs: Path, model: str = EMBEDDED_MODEL) -> FastAPI:
    """The app for the runs under ``runs``; ``model`` is the Data page's default tokenizer."""
    app = FastAPI(title="lmtune", docs_url=None, redoc_url=None, openapi_url=None)  # nothing the user did not ask
    jobs = Jobs(runs)
    state = runs / UI_FOLDER
    templates = Environment(loader=PackageLoader("lmtune.ui", "templates"), autoescape=select_autoescape())

    def page(name: str, **context: Any) -> HTMLResponse:
        html = templates.get_template(f"{name}.html").render(pages=PAGES, current=name, **context)
        return HTMLResponse(html)

    _error_handlers(app)
    _one_import_of_the_libraries(app)

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return page("train", runs=[s.as_dict() for s in jobs.states()], selected=None)

    @app.get("/data", response_class=HTMLResponse)
    def data_page() -> HTMLResponse:
        return page("data", formats=DATA_FORMATS, model=model)

    @app.get("/config", response_class=HTMLResponse)
    def config_page() -> HTMLResponse:
        return page("config", sections=forms.form_sections(), path=DEFAULT_CONFIG)

    @app.get("/train", response_class=HTMLResponse)
    def train_page(run: str | None = None) -> HTMLResponse:
        return page("train", runs=[s.as_dict() for s in jobs.states()], selected=run)

    @app.get("/results", response_class=HTMLResponse)
    def results_page(run: str | None = None) -> HTMLResponse:
        from lmtune.ui.results import run_results

        names = jobs.names()
        chosen = run or next((s.name for s in jobs.states() if s.status == "finished"), None)
        shown = run_results(jobs.state(chosen).folder) if chosen else None
        return page("results", runs=names, selected=chosen, result=shown)

    @app.get("/chat", response_class=HTMLResponse)
    def chat_page(run: str | None = None) -> HTMLResponse:
        finished = [s.name for s in jobs.states() if s.status == "finished"]
        return page("chat", runs=finished, selected=run)

    @app.get("/report/{name}", response_class=HTMLResponse)
    def report(name: str) -> HTMLResponse:
        from lmtune.ui.results import report_html

        return HTMLResponse(report_html(jobs.state(name).folder))

    @app.get("/ui.js")
    def script() -> Response:
        return Response(_asset("ui.js"), media_type="text/javascript")

    @app.get("/ui.css")
    def styles() -> Response:
        return Response(_asset("ui.css"), media_type="text/css")

    # ------------------------------------------------------------------ data

    @app.post("/api/data/check")
    def data_check(body: dict[str, Any]) -> dict[str, Any]:
        from lmtune.ui.data import check_file

        return check_file(str(body.get("path", "")), body.get("format", "auto"), body.get("model") or model,
                          state / "data")  # fmt: skip

    @app.post("/api/data/upload")
    def data_upload(body: dict[str, Any]) -> dict[str, Any]:
        from lmtune.ui.data import save_upload

        return {"path": str(save_upload(str(body.get("name", "")), str(body.get("text", "")), state / "uploads"))}

    # ------------------------------------------------------------------ config

    @app.post("/api/config/check")
    def config_check(body: dict[str, Any]) -> dict[str, Any]:
        text, _, error = forms.check_form(_lines(body), _where(body))
        return {"yaml": text, "error": error}

    @app.post("/api/config/save")
    def config_save(body: dict[str, Any]) -> dict[str, Any]:
        path = Path(_where(body))
        text, _, error = forms.check_form(_lines(body), str(path))
        if error:
            raise ConfigError(error.removeprefix("lmtune: error: "))
        if path.exists() and not body.get("replace"):
            raise ConfigError(f"{path}: exists; tick 'replace' to overwrite it, or give another file name")
        atomic_write_text(path, text)
        return {"saved": str(path), "command": f"lmtune train {path}"}

    @app.post("/api/config/load")
    def config_load(body: dict[str, Any]) -> dict[str, Any]:
        values, more = forms.form_values(Path(_where(body)))
        return {"values": values, "more": more}

    # ------------------------------------------------------------------ runs

    @app.get("/api/runs")
    def run_list() -> list[dict[str, Any]]:
        return [s.as_dict() for s in jobs.states()]

    @app.post("/api/runs/start")
    def run_start(body: dict[str, Any]) -> dict[str, Any]:
        _, cfg, error = forms.check_form(_lines(body), _where(body))
        if error:
            raise ConfigError(error.removeprefix("lmtune: error: "))
        return jobs.start(cfg).as_dict()

    @app.get("/api/runs/{name}")
    def run_progress(name: str) -> dict[str, Any]:
        return jobs.progress(name)

    @app.post("/api/runs/{name}/stop")
    def run_stop(name: str) -> dict[str, Any]:
        return jobs.stop(name).as_dict()

    @app.post("/api/runs/{name}/resume")
    def run_resume(name: str) -> dict[str, Any]:
        return jobs.resume(name).as_dict()

    @app.post("/api/compare")
    def run_compare(body: dict[str, Any]) -> dict[str, Any]:
        from lmtune.ui.results import compare

        names = [str(n) for n in body.get("runs") or []]
        if not names:
            raise ConfigError("compare: tick at least one run")
        return compare([jobs.state(n).folder for n in names], state / "compare")

    @app.post("/api/chat")
    def chat_answer(body: dict[str, Any]) -> StreamingResponse:
        from lmtune.ui import chat

        settings = chat.check(body.get("max_new_tokens", 128), body.get("temperature", 0), body.get("top_p", 1))
        message = str(body.get("message", "")).strip()
        if not message:
            raise ConfigError("chat: type a message first")
        folder = jobs.state(str(body.get("run", ""))).folder
        return StreamingResponse(chat.answers(folder, message, settings), media_type="application/x-ndjson")

    return app


def _lines(body: dict[str, Any]) -> list[str]:
    values = {str(k): str(v) for k, v in (body.get("values") or {}).items()}
    return forms.form_lines(values, str(body.get("more") or ""))


def _where(body: dict[str, Any]) -> str:
    return str(body.get("path") or DEFAULT_CONFIG).strip()


def _asset(name: str) -> bytes:
    return (Path(__file__).parent / "templates" / name).read_bytes()


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LmtuneError)
    def user_error(request: Request, e: LmtuneError) -> JSONResponse:
        return JSONResponse({"error": f"lmtune: error: {e}"}, status_code=400)

    @app.exception_handler(ValidationError)
    def bad_value(request: Request, e: ValidationError) -> JSONResponse:
        problems = "; ".join(describe(err) for err in e.errors(include_url=False))
        return JSONResponse({"error": f"lmtune: error: {problems}"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "lmtune: error: the request is not the JSON this page sends"}, status_code=400)

    @app.exception_handler(Exception)
    def unexpected(request: Request, e: Exception) -> JSONResponse:
        logger.exception("lmtune ui: %s %s failed", request.method, request.url.path)  # the traceback: server log only
        line = (str(e).strip().splitlines() or [""])[0]
        return JSONResponse({"error": f"lmtune: internal error: {type(e).__name__}: {line}"}, status_code=500)


_IMPORTING = threading.Lock()
_IMPORTED = threading.Event()


def _one_import_of_the_libraries(app: FastAPI) -> None:
    """API requests wait for one thread's import of transformers instead of importing it side by side.

    The pages are served before transformers is imported (the UI starts in about a second); FastAPI
    runs handlers in a thread pool, and two threads importing transformers' lazy modules at once can
    see one half-initialised ("cannot import name ... from partially initialized module").
    """
    import anyio

    def import_once() -> None:
        with _IMPORTING:
            from transformers import TrainingArguments  # noqa: F401  (the heaviest import of any handler)
        _IMPORTED.set()

    @app.middleware("http")
    async def libraries_imported_first(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/api/") and not _IMPORTED.is_set():  # after that, no thread hop per request
            await anyio.to_thread.run_sync(import_once)
        return await call_next(request)
