"""Python side of ``llamacpp.mjs``: ask the real llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binaries) about a GGUF.

``make test`` installs the Node package here with ``npm ci`` from the committed lock file; tests and
benchmarks that need llama.cpp call :func:`missing` first and skip (tests) or stop (benchmarks) with its reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "llamacpp.mjs"
TIMEOUT_S = 600


def missing() -> str | None:
    """Why llama.cpp cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (llama.cpp runs through node-llama-cpp)"
    if not (HERE / "node_modules" / "@node-llama-cpp" / "linux-x64").is_dir():
        return (
            f"node-llama-cpp is not installed: run `npm ci --omit=optional --ignore-scripts` in {HERE} (make test does)"
        )
    return None


def ask(model: Path, lora: list[Path] | None = None, context: int = 512, **request: Any) -> dict[str, Any]:
    """Load ``model`` (and LoRA adapters) in llama.cpp and answer ``request`` (see ``llamacpp.mjs``)."""
    payload = {"model": str(model), "lora": [str(p) for p in lora or ()], "context": context, **request}
    done = subprocess.run(
        ["node", str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True, cwd=HERE, timeout=TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp failed on {model} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def log_softmax(logits: Any) -> np.ndarray:
    """Natural-log probabilities from logits (positions x vocabulary), in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def nmse(reference: Any, test: Any) -> float:
    """Mean squared difference over the reference's variance, as llama.cpp's ``check-nmse.py`` computes it.

    Applied to log-probabilities (llama.cpp's side gives probabilities), which differ from logits only by a
    constant per position.
    """
    ref, out = np.asarray(reference, dtype=np.float64), np.asarray(test, dtype=np.float64)
    return float(np.mean((out - ref) ** 2) / np.var(ref))
