"""The Chat page: a run's base and fine-tuned model answer the same prompt, streamed, as ``lmtune chat --compare``.

Models are loaded once per run and kept (the last two runs asked about); each answer is produced by
`lmtune.shipping.chat.stream_answer` in a worker thread and sent to the page as it comes, one JSON
line per piece.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmtune.shipping import chat

KEPT_RUNS = 2
_loaded: OrderedDict[str, list[chat.Side]] = OrderedDict()
_lock = threading.Lock()  # one generation at a time: the base side of an adapter run is the same model


def sides_of(run: Path) -> list[chat.Side]:
    """[base, fine-tuned] of a run folder, loaded on first use."""
    key = str(run.resolve())
    if key not in _loaded:
        _loaded[key] = chat.load_sides(str(run), chat.run_base(str(run)))
        while len(_loaded) > KEPT_RUNS:
            _loaded.popitem(last=False)
    _loaded.move_to_end(key)
    return _loaded[key]


def check(max_new_tokens: Any, temperature: Any, top_p: Any) -> chat.Settings:
    """The generation settings, refused with ``lmtune chat``'s messages."""
    from lmtune.errors import ExportError

    try:
        return chat.check_settings(int(max_new_tokens), float(temperature), float(top_p))
    except (TypeError, ValueError):
        raise ExportError("generation settings: max new tokens, temperature and top-p must be numbers") from None


def answers(run: Path, message: str, settings: chat.Settings, system: str | None = None) -> Iterator[str]:
    """JSON lines: ``{"side": "base"|"finetuned", "text": piece}``, then ``{"done": true}`` (or ``{"error"}``)."""
    pieces: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def work() -> None:
        try:
            with _lock:
                sides = sides_of(run)
                if system is None:
                    config_system = (chat.run_config(str(run)).get("data") or {}).get("system_prompt")
                else:
                    config_system = system
                for side, name in zip(sides, ("base", "finetuned"), strict=True):
                    ids = chat.prompt_ids(side, config_system, message)
                    chat.stream_answer(side, ids, settings, lambda text, n=name: pieces.put({"side": n, "text": text}))
            pieces.put({"done": True})
        except Exception as e:  # noqa: BLE001 - shown on the page as one line, the server keeps serving
            pieces.put({"error": _one_line(e)})
        finally:
            pieces.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := pieces.get()) is not None:
        yield json.dumps(item) + "\n"


def _one_line(e: Exception) -> str:
    from lmtune.errors import LmtuneError

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if isinstance(e, LmtuneError) else f"{type(e).__name__}: {text}"
