"""Write a model and its tokenizer as one GGUF file, in-process with the ``gguf`` package's ``GGUFWriter``.

The file holds what llama.cpp's ``convert_hf_to_gguf.py`` (and its ``llama-quantize``) would write for the model,
so llama.cpp, Ollama and LM Studio load it, and so does ``transformers``
(``from_pretrained(folder, gguf_file=name)``), which lmtune's export check uses. The pieces:

* ``families/`` — one module per model family: llama.cpp's architecture, tensor names and layouts, its keys;
* ``vocab``     — the tokenizer: byte-level BPE with llama.cpp's pre-tokenizer name, or SentencePiece with scores;
* ``types``     — the type of each tensor for each ``--quant`` (``f32`` ... ``q4_0``, and llama.cpp's k-quant mixes);
* ``kquants``   — Q4_K / Q5_K / Q6_K blocks, which the ``gguf`` package reads but cannot write; ``kmix`` the
  type ``llama-quantize`` gives each tensor in its k-quant file types;
* ``lora``      — a LoRA adapter as llama.cpp's adapter GGUF.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families import FAMILIES, Family, Tensor, family_for
from lmtune.shipping.gguf.types import FILE_TYPES, encode, tensor_types
from lmtune.shipping.gguf.vocab import Vocabulary, vocabulary
from lmtune.shipping.quants import GGUF_QUANTS

SUPPORTED_ARCHITECTURES = tuple(FAMILIES)  # transformers' model_type values lmtune writes


def check_gguf_supported(model_config: Any, tokenizer: Any, quant: str) -> None:
    """Raise :class:`ExportError` (one line) if this model, tokenizer or quant cannot be written as GGUF."""
    _check(model_config, tokenizer, quant)


def _check(config: Any, tokenizer: Any, quant: str) -> tuple[Family, Vocabulary]:
    if quant not in GGUF_QUANTS:
        raise ExportError(f"GGUF quantisation '{quant}' is not one of: {', '.join(GGUF_QUANTS)}")
    family = family_for(config)
    family.check(config)
    return family, vocabulary(tokenizer, config.vocab_size)


def reader_config(config: Any) -> Any:
    """``config`` as transformers' GGUF reader needs it to read a file lmtune wrote for that model back
    (``from_pretrained(folder, gguf_file=name, config=reader_config(config))``).

    The model's own config, not the one the reader would parse from the file's keys: the reader ignores keys
    llama.cpp needs (RoPE scaling, head sizes, sliding windows), so the weights are what is checked this way and
    the keys are checked in llama.cpp itself (tests/test_gguf_llamacpp.py).
    """
    return family_for(config).reader_config(config)


def write_gguf(model: Any, tokenizer: Any, path: Path, quant: str = "f32", name: str | None = None) -> None:
    """Write ``model`` (a ``PreTrainedModel`` of a supported family) and its fast tokenizer to ``path`` as GGUF.

    ``quant`` is one of :data:`GGUF_QUANTS`; ``name`` becomes ``general.name`` (default: the model's
    folder name). The file appears whole or not at all.
    """
    if hasattr(model, "peft_config"):
        raise ExportError("GGUF export needs a plain model: merge the adapter into its base first")
    config = model.config
    family, vocab = _check(config, tokenizer, quant)
    tensors = family.tensors(model)
    types = tensor_types(quant, tensors, config)

    def header(writer: gguf.GGUFWriter) -> None:
        writer.add_name(name or Path(getattr(config, "_name_or_path", "") or "").name or "model")
        family.hyperparameters(writer, config)
        writer.add_file_type(FILE_TYPES[quant])
        vocab.write(writer)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    write_file(path, family.arch_name, header, tensors, types)


def write_file(
    path: Path,
    arch: str,
    header: Any,
    tensors: list[Tensor],
    types: list[gguf.GGMLQuantizationType],
    kind: gguf.GGUFType = gguf.GGUFType.MODEL,
) -> None:
    """A GGUF file (a model or an adapter) of ``tensors`` (in ``types``) after the keys ``header(writer)`` adds;
    it appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is a rename; opened by GGUFWriter with the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_type(kind)
        header(writer)
        for tensor, qtype in zip(tensors, types, strict=True):
            nbytes = math.prod(gguf.quant_shape_to_byte_shape(tensor.shape, qtype))
            writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # One tensor at a time: peak memory is one converted tensor, not a second copy of the model.
        for tensor, qtype in zip(tensors, types, strict=True):
            writer.write_tensor_data(encode(tensor.values(), qtype))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["GGUF_QUANTS", "SUPPORTED_ARCHITECTURES", "check_gguf_supported", "reader_config", "write_gguf"]
