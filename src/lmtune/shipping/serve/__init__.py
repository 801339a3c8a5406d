"""``lmtune serve RUN_OR_MODEL``: an OpenAI-compatible HTTP server for a run or a model.

FastAPI and uvicorn answer HTTP (`app`); the model is loaded by lmtune's own loader and answers
through transformers' public ``model.generate``, one request at a time (`engine`); each request is
checked field by field first, and what the server does not honour is refused, not ignored (`request`).
A run folder with an adapter is merged and exported into ``RUN/export`` first (checked like any
export, reused while it is newer than the adapter). Responses name the model by the run's name.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from lmtune.errors import ExportError
from lmtune.extras import require

GRACE_S = 3

# --------------------------------------------------------------------------- what to serve


def servable_folder(target: str, echo: Any = print) -> str:
    """A plain model folder (or hub id) to serve: runs with adapters are merged and exported first."""
    from lmtune.config import ModelConfig
    from lmtune.models import check_weights, named, resolve
    from lmtune.shipping.export import EXPORT_RECORD, export

    path = Path(target).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        check_weights(path, ModelConfig(), "MODEL")  # a damaged run: one line, also when an old export is there
        exported = path / "export"
        if _export_is_current(path, exported / EXPORT_RECORD):
            echo(f"serving the export of {path} in {exported}")
        else:
            echo(f"merging {path} into a plain model folder for serving: {exported}")
            export(path, exported, "hf", None, overwrite=True, echo=echo, argument="MODEL")
        return str(exported)
    if path.is_dir() and not (path / "config.json").is_file():
        raise ExportError(
            f"{named('MODEL', target)}: not a run folder or model folder (no adapter_config.json or config.json)"
        )
    folder = resolve(target, "MODEL")  # HF folders as they are; GGUF files and the embedded model via the cache
    if isinstance(folder, Path):
        check_weights(folder, ModelConfig(), "MODEL")  # before the port is taken and the engine loads
    return str(folder)


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


# --------------------------------------------------------------------------- the command


def model_name(target: str) -> str:
    """The name responses give the model: the run's (or model folder's) name, ``demo`` for ``runs/demo``."""
    return Path(target).expanduser().resolve().name


def serve(target: str, host: str = "127.0.0.1", port: int = 8000, echo: Any = print) -> None:
    """Serve ``target`` until interrupted (Ctrl-C)."""
    require("serve", what="lmtune serve")  # before a run is merged or a port taken
    import uvicorn

    from lmtune.shipping.serve.app import build_app
    from lmtune.shipping.serve.engine import Engine

    check_port_free(host, port)
    folder = servable_folder(target, echo)
    echo(f"loading {folder} ...")
    name = model_name(target)
    app = build_app(Engine.load(folder), name, also_known_as=(target,))
    check_port_free(host, port)  # loading took a while: fail cleanly if someone took the port meanwhile
    echo(f"OpenAI-compatible API on http://{host}:{port}/v1 (model name: {name!r}); Ctrl-C stops")
    echo(f"on a GPU machine, the same with vLLM: {vllm_command(target, folder)}")
    # On Ctrl-C, answers still streaming get a few seconds, then are cut (their generation stops with them).
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S)
