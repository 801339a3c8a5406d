"""Smaller copies of a merged model for CPU deployment, through torchao and transformers' ``TorchAoConfig``.

The quantised folder is plain safetensors with a ``quantization_config`` in ``config.json``,
so ``AutoModelForCausalLM.from_pretrained(folder)`` reloads it with torchao installed and
no lmtune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.errors import ExportError
from lmtune.extras import require
from lmtune.shipping.quants import GGUF_QUANTS, HF_QUANTS


def check_hf_quant(quant: str | None) -> None:
    if quant is not None and quant not in HF_QUANTS:
        raise ExportError(
            f"--quant {quant}: not a quantisation of --format hf (choose {', '.join(HF_QUANTS)}; "
            f"GGUF types {', '.join(GGUF_QUANTS)} go with --format gguf)"
        )
    if quant is not None:
        require("int8", what=f"lmtune export --quant {quant}")


def quantize_int8(float_folder: Path, target: Path) -> Any:
    """Load the float folder with int8 weight-only quantisation, save it to ``target``; returns the model."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    model = AutoModelForCausalLM.from_pretrained(
        float_folder, dtype=torch.float32, quantization_config=TorchAoConfig(Int8WeightOnlyConfig())
    )
    model.save_pretrained(target)
    return model
