"""``lmtune ui``: the verb's arguments and the server's start."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from lmtune.errors import LmtuneError
from lmtune.extras import require


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Register ``lmtune ui`` with the CLI's sub-commands."""
    from lmtune.config import EMBEDDED_MODEL

    u = verbs.add_parser("ui", help="a local web app: data check, config form, live training, results, chat")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    u.add_argument("--runs", default="runs", help="folder of run folders to show (default runs/)")
    u.add_argument("--model", default=EMBEDDED_MODEL, help="the Data page's default tokenizer for token counts")
    u.set_defaults(func=cmd_ui, import_late=True)  # transformers is imported on the first data check or chat


def cmd_ui(args: argparse.Namespace) -> None:
    run_ui(args.host, args.port, Path(args.runs), args.model)


def run_ui(host: str, port: int, runs: Path, model: str | None = None) -> None:
    """Serve the UI on ``host:port`` until Ctrl-C.

    Raises:
        LmtuneError: the port is in use or cannot be bound, or ``runs`` is a file.
        MissingExtraError: the ui extra (fastapi, uvicorn) is not installed.
    """
    require("ui", what="lmtune ui")
    import uvicorn

    from lmtune.config import EMBEDDED_MODEL
    from lmtune.ui.app import make_app

    if runs.exists() and not runs.is_dir():
        raise LmtuneError(f"--runs {runs}: is a file, not a folder")
    if not 0 < port < 65536:
        raise LmtuneError(f"--port {port}: must be between 1 and 65535")
    sock = _bound_socket(host, port)  # bound here, so "in use" is one line and no other process can take it
    app = make_app(runs, model or EMBEDDED_MODEL)
    print(f"lmtune ui: http://{host}:{port}  (runs: {runs}/; Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _bound_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise LmtuneError(f"--host {host}: not an address of this machine") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    if sys.platform != "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop may bind
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise LmtuneError(f"--port {port}: {host}:{port} is already in use; choose another with --port") from None
        raise LmtuneError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock
