"""The model families lmtune writes as GGUF, one module each; FAMILIES maps transformers' ``model_type`` to one."""

from __future__ import annotations

from typing import Any

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families.base import Family, Tensor
from lmtune.shipping.gguf.families.gemma import GEMMA2, GEMMA3
from lmtune.shipping.gguf.families.llama import LLAMA
from lmtune.shipping.gguf.families.phi3 import PHI3
from lmtune.shipping.gguf.families.qwen import QWEN2, QWEN3

FAMILIES: dict[str, Family] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA3,
    "phi3": PHI3,
}


def family_for(config: Any) -> Family:
    """The family of ``config``; one line naming the supported ones when lmtune cannot write it."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ExportError(f"GGUF export supports the model types {', '.join(FAMILIES)}; this model is '{model_type}'")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "Family", "Tensor", "family_for"]
