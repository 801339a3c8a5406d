"""Optional features and the pip extras that install them (``pip install 'lmtune[serve]'``, ...).

The core install trains, evaluates and reports (``lmtune train``, ``data``, ``eval``, ``report``,
``export`` to a float HF folder). Each feature below needs packages nothing else does; its entry
calls :func:`require` first, so a missing package is one line naming the extra (exit status 2, no
traceback), before anything is loaded or written.
"""

from __future__ import annotations

import importlib.util

from lmtune.errors import MissingExtraError

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),  # lmtune serve
    "ui": ("fastapi", "uvicorn"),  # lmtune ui (its templates' jinja2 is in the core: chat templates need it)
    "privacy": ("opacus",),  # a run config's privacy: section (DP-SGD)
    "sweep": ("optuna",),  # lmtune sweep
    "gguf": ("gguf",),  # lmtune export --format gguf; reading a .gguf model, the embedded default too
    "int8": ("torchao",),  # lmtune export --quant int8; loading such an export
    "benchmarks": ("lm_eval",),  # eval.benchmarks: standard benchmarks through lm-evaluation-harness
}
"""Each extra of pyproject.toml's ``[project.optional-dependencies]`` and the modules it provides (their
import names are their distribution names, up to - and _); ``all`` gathers them."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed."""
    return [module for module in EXTRAS[extra] if not _installed(module)]


def require(extra: str, *, what: str) -> None:
    """Raise :class:`MissingExtraError` if a module of ``extra`` is missing: ``{what} needs the {extra} extra: ...``.

    Only looks the modules up (``importlib.util.find_spec``), nothing is imported.
    """
    if gone := missing(extra):
        raise MissingExtraError(
            f"{what} needs the {extra} extra: pip install 'lmtune[{extra}]' (missing: {', '.join(gone)})"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a __spec__ (set up by hand): it is there
        return True
