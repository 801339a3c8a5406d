"""A PEFT LoRA adapter as llama.cpp's adapter GGUF, to load beside a GGUF of its base (``llama-cli --lora``,
Ollama's ``ADAPTER``).

Each adapted matrix W (out x in) becomes the pair ``<W's GGUF name>.lora_a`` (A: r x in) and ``.lora_b``
(B: out x r); llama.cpp adds ``alpha / r * B A x`` to ``W x``. B's rows go through the same layout change as W's
(Llama's rotary interleave), and where PEFT's scale is not ``alpha / r`` (rsLoRA, per-module ranks or alphas) B
carries the difference, so llama.cpp's sum equals PEFT's. What is not a low-rank update of a matrix llama.cpp
holds (DoRA's magnitudes, fully trained modules, LoRA on the embeddings or the output layer) is refused: its
merged export carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lmtune.errors import ExportError
from lmtune.shipping.gguf.families import Tensor, family_for

ADAPTER = "default"
EMBEDDING_KINDS = (gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.OUTPUT)


def check_lora_supported(peft_model: Any) -> None:
    """Raise :class:`ExportError` (one line) unless the adapter is a plain LoRA llama.cpp can apply."""
    config = peft_model.peft_config.get(ADAPTER)
    kind = str(getattr(config, "peft_type", "")).split(".")[-1].upper()
    if kind != "LORA":
        raise ExportError(f"--adapter-only: llama.cpp loads LoRA adapters; this run's adapter is {kind.lower()} "
                          "(export it merged, without --adapter-only)")  # fmt: skip
    if getattr(config, "use_dora", False):
        raise ExportError("--adapter-only: a DoRA adapter rescales whole weights, which llama.cpp's LoRA cannot; "
                          "export it merged, without --adapter-only")  # fmt: skip
    if getattr(config, "modules_to_save", None):
        raise ExportError(f"--adapter-only: the run also trained whole modules ({', '.join(config.modules_to_save)})"
                          ", which a LoRA adapter cannot carry; export it merged")  # fmt: skip
    base = peft_model.get_base_model().config
    family_for(base).check(base)
    _pairs(peft_model)  # refuses LoRA on the embeddings or the head


def write_lora_gguf(peft_model: Any, path: Path, name: str) -> dict[str, Any]:
    """Write the LoRA of ``peft_model`` as a llama.cpp adapter GGUF; returns its alpha and adapted matrices."""
    check_lora_supported(peft_model)
    config = peft_model.get_base_model().config
    family = family_for(config)
    alpha = float(peft_model.peft_config[ADAPTER].lora_alpha)
    tensors = []
    for gguf_name, kind, layer, module in _pairs(peft_model):
        a = module.lora_A[ADAPTER].weight.detach().float().cpu().numpy()
        b = module.lora_B[ADAPTER].weight.detach().float().cpu().numpy()
        rank = a.shape[0]
        b = b * (float(module.scaling[ADAPTER]) * rank / alpha)  # llama.cpp scales by alpha / r
        b = np.ascontiguousarray(family.transform(b, kind, gguf_name, config))
        tensors += [Tensor(f"{gguf_name}.lora_a", kind, layer, a.shape, lambda v=a: v),
                    Tensor(f"{gguf_name}.lora_b", kind, layer, b.shape, lambda v=b: v)]  # fmt: skip

    def header(writer: gguf.GGUFWriter) -> None:
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)

    from lmtune.shipping.gguf import write_file

    types = [gguf.GGMLQuantizationType.F32] * len(tensors)
    write_file(path, family.arch_name, header, tensors, types, kind=gguf.GGUFType.ADAPTER)
    return {"lora_alpha": alpha, "adapted_matrices": len(tensors) // 2}


def _pairs(peft_model: Any) -> list[tuple[str, gguf.MODEL_TENSOR, int | None, Any]]:
    """(GGUF name of the adapted matrix, its kind, its layer, the PEFT LoRA layer) for every adapted matrix."""
    from peft.tuners.lora import LoraLayer

    config = peft_model.get_base_model().config
    names = gguf.get_tensor_name_map(family_for(config).arch, config.num_hidden_layers)
    base = peft_model.get_base_model()
    out = []
    for module_name, module in base.named_modules():
        if not isinstance(module, LoraLayer) or ADAPTER not in getattr(module, "lora_A", {}):
            continue
        found = names.get_type_and_name(f"{module_name}.weight", try_suffixes=(".weight",))
        if found is None or found[0] in EMBEDDING_KINDS:
            raise ExportError(f"--adapter-only: LoRA on '{module_name}' has no llama.cpp adapter form; "
                              "export it merged, without --adapter-only")  # fmt: skip
        kind, gguf_name = found
        layer = next((int(p) for p in module_name.split(".") if p.isdigit()), None)
        out.append((gguf_name, kind, layer, module))
    if not out:
        raise ExportError("--adapter-only: the adapter has no LoRA matrices")
    return out


def apply_lora_gguf(model: Any, path: Path) -> int:
    """Add the updates of a llama.cpp adapter GGUF to ``model`` (a plain transformers model of its base), as
    llama.cpp would apply them; returns how many matrices changed. Read with the ``gguf`` package's own reader,
    so that an export checks the file it wrote rather than what it meant to write."""
    import torch

    config = model.config
    family = family_for(config)
    reader = gguf.GGUFReader(path)
    alpha = float(reader.fields[gguf.Keys.Adapter.LORA_ALPHA].contents())
    pairs = {t.name: np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))
             for t in reader.tensors}  # fmt: skip
    names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    changed = 0
    for hf_name, weight in model.named_parameters():
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight",))
        if found is None or f"{found[1]}.lora_a" not in pairs:
            continue
        a, b = pairs[f"{found[1]}.lora_a"], pairs[f"{found[1]}.lora_b"]
        delta = family.untransform(b @ a * (alpha / a.shape[0]), found[0], config)
        with torch.no_grad():
            weight.add_(torch.from_numpy(np.ascontiguousarray(delta)).to(weight.dtype))
        changed += 1
    return changed
