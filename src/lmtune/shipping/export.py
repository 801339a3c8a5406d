"""``lmtune export RUN --output DIR [--format hf|gguf] [--quant ...] [--adapter-only] [--overwrite] ...``.

Everything is written into a temporary folder next to ``DIR``, checked against the run's
own model (`lmtune.shipping.check`), and only then renamed to ``DIR``: a failed or interrupted
export leaves no half-written folder, and an earlier export is replaced only with
``--overwrite``, and only its own files (`lmtune.shipping.output`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lmtune.errors import ExportError
from lmtune.extras import require
from lmtune.files import atomic_write_json, atomic_write_text, current_umask, make_staging_folder
from lmtune.shipping import check, gate
from lmtune.shipping.card import model_card
from lmtune.shipping.merge import (
    Shippable,
    bake_system_prompt,
    describe_source,
    load_shippable,
    merge,
    set_generation_stops,
)
from lmtune.shipping.ollama import build_modelfile
from lmtune.shipping.output import EXPORT_RECORD, check_output, put_in_place
from lmtune.shipping.quantize import check_hf_quant, quantize_int8

logger = logging.getLogger(__name__)

FORMATS = ("hf", "gguf")


def export(
    source: Path,
    output: Path,
    fmt: str = "hf",
    quant: str | None = None,
    overwrite: bool = False,
    echo: Any = print,
    accept_degraded: bool = False,
    argument: str = "RUN",
    adapter_only: bool = False,
) -> dict[str, Any]:
    """Export ``source`` (a run folder, model folder or .gguf file) to ``output``; returns what ``export.json`` holds.

    An export whose check fails (`lmtune.shipping.gate.verdict`) is refused and nothing is
    written, unless ``accept_degraded``: then it is written, and ``export.json`` says so.
    ``argument`` is what messages call ``source`` (``RUN``; ``MODEL`` when serve exports).
    ``adapter_only`` (GGUF): the run's LoRA as llama.cpp's adapter GGUF next to a GGUF of its base, unmerged.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if adapter_only and fmt != "gguf":
        raise ExportError("--adapter-only goes with --format gguf (as an HF adapter, the run folder is the export)")
    if fmt == "gguf":
        require("gguf", what="lmtune export --format gguf")
        from lmtune.shipping.gguf import GGUF_QUANTS, check_gguf_supported

        if (quant or "f32") not in GGUF_QUANTS:
            raise ExportError(f"--quant {quant}: not a GGUF type this writer makes (choose {', '.join(GGUF_QUANTS)})")
    else:
        check_hf_quant(quant)
    check_output(output, source, overwrite)
    describe_source(source, argument)  # refuses prompt-learning adapters and what holds no model, before loading
    echo(f"loading {source} in float32 ...")
    shippable = load_shippable(source, argument)
    if fmt == "gguf":
        check_gguf_supported(shippable.model.config, shippable.tokenizer, quant or "f32")
    if adapter_only:
        _check_adapter(shippable, argument)
    stops = set_generation_stops(shippable.model, shippable.tokenizer)
    prompts = check.check_prompts(source)
    ids = check.prompt_ids(shippable.tokenizer, shippable.run, prompts)
    ref = check.reference(shippable.model, shippable.tokenizer, prompts, ids, stops)
    merged = shippable.model if adapter_only else merge(shippable)
    set_generation_stops(merged, shippable.tokenizer)
    bake_system_prompt(shippable.tokenizer, shippable.run)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_folder(output.parent, ".tmp-export-")
    try:
        if fmt == "hf":
            result = _write_hf(merged, shippable, staging, quant, ref, echo)
        elif adapter_only:
            result = _write_gguf_adapter(shippable, staging, source, quant or "f32", ref, echo)
        else:
            result = _write_gguf(merged, shippable, staging, source, quant or "f32", ref, echo)
        result["source"] = str(source)
        result["run_stopped"] = check._ends_with_stop(ref.answers[0], ref.stops)
        result["stop_token_ids"] = stops
        _refuse_not_stopping(result)
        result["check"] = _gate(result, accept_degraded, echo)
        stop_tokens = [shippable.tokenizer.convert_ids_to_tokens(i) for i in stops]
        atomic_write_text(staging / "README.md", model_card(source, shippable, result, stop_tokens))
        if fmt == "gguf":
            ollama = build_modelfile(
                result["file"], shippable.tokenizer, shippable.run, stops, result.get("adapter_file")
            )
            atomic_write_text(staging / "Modelfile", ollama.text)
            result["modelfile"] = ollama.record()
            for note in ollama.notes:
                echo(f"Modelfile: {note}")
        result["files"] = sorted([p.name for p in staging.iterdir()] + [EXPORT_RECORD])  # what --overwrite replaces
        atomic_write_json(staging / EXPORT_RECORD, result)
        _umask_permissions(staging)
        put_in_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _gate(result: dict[str, Any], accept_degraded: bool, echo: Any) -> dict[str, Any]:
    """The check's verdict for ``export.json``; a failed check stops the export unless it is accepted."""
    verdict, failures = gate.verdict(result, gate.stored_as(result["quant"], result.get("dtype")))
    what = f"{result['format']} {verdict['stored_as']}"
    if failures and not accept_degraded:
        raise ExportError(
            f"export check failed for {what}: {'; '.join(failures)} (against the run's own model); "
            "nothing was written (--accept-degraded writes it anyway)"
        )
    if failures:
        echo(f"warning: export check failed for {what}: {'; '.join(failures)}; written as asked "
             "(--accept-degraded), and export.json says so")  # fmt: skip
    return {**verdict, "accepted_degraded": bool(failures)}


def _refuse_not_stopping(result: dict[str, Any]) -> None:
    """An export that gives the run's answers but runs on past their end has wrong generation settings.

    That is lmtune's mistake to fix, not a loss of precision to accept, so no flag lets it through.
    """
    if result["run_stopped"] and not result["stopped"] and result["greedy_match"] == 1:
        raise ExportError(
            "export check failed: the exported model does not stop where the run's model does "
            "(generation_config eos_token_id); nothing was written"
        )


def _write_hf(
    merged: Any, shippable: Shippable, staging: Path, quant: str | None, ref: check.Reference, echo: Any
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = shippable.tokenizer
    dtype = _base_dtype(shippable.base) if not quant else torch.float32
    float_dir = staging / ".float" if quant else staging
    merged.to(dtype).save_pretrained(float_dir)
    tokenizer.save_pretrained(float_dir)
    echo(f"written ({str(dtype).removeprefix('torch.')}); loading it back with plain transformers to check ...")
    reloaded = AutoModelForCausalLM.from_pretrained(float_dir, dtype=torch.float32).eval()
    if not quant:
        return {"format": "hf", "quant": None, "dtype": str(dtype).removeprefix("torch."),
                **check.compare(reloaded, ref, tokenizer), "size_bytes": _weights_bytes(staging)}  # fmt: skip
    echo("quantising to int8 (torchao weight-only) ...")
    quantize_int8(float_dir, staging)
    tokenizer.save_pretrained(staging)
    quantized = AutoModelForCausalLM.from_pretrained(staging).eval()
    result = {"format": "hf", "quant": quant, "dtype": "int8 weights, float32 activations"}
    result.update(check.compare(quantized, ref, tokenizer))
    result["size_bytes"] = _weights_bytes(staging)
    result["float_size_bytes"] = _weights_bytes(float_dir)
    result["tokens_per_s"] = check.tokens_per_second(quantized, ref.input_ids, tokenizer.pad_token_id)
    result["float_tokens_per_s"] = check.tokens_per_second(reloaded, ref.input_ids, tokenizer.pad_token_id)
    shutil.rmtree(float_dir)
    return result


def _write_gguf(
    merged: Any, shippable: Shippable, staging: Path, source: Path, quant: str, ref: check.Reference, echo: Any
) -> dict[str, Any]:
    from lmtune.shipping.gguf import write_gguf

    name = f"{source.resolve().name}-{quant}.gguf"
    write_gguf(merged.float(), shippable.tokenizer, staging / name, quant, name=source.resolve().name)
    echo(f"written {name}; loading it back with transformers (gguf_file=) to check ...")
    reloaded = _read_gguf(staging / name, merged.config)
    result = {"format": "gguf", "quant": quant, "file": name}
    result.update(check.compare(reloaded, ref, shippable.tokenizer))
    result["size_bytes"] = (staging / name).stat().st_size
    return result


def _check_adapter(shippable: Shippable, argument: str) -> None:
    from lmtune.shipping.gguf.lora import check_lora_supported

    if not shippable.is_adapter:
        raise ExportError(f"--adapter-only: {argument} holds a whole model (method {shippable.method}), no adapter")
    check_lora_supported(shippable.model)


def _write_gguf_adapter(
    shippable: Shippable, staging: Path, source: Path, quant: str, ref: check.Reference, echo: Any
) -> dict[str, Any]:
    """The LoRA as llama.cpp's adapter GGUF and the unmerged base as a GGUF; checked as llama.cpp applies them."""
    from lmtune.shipping.gguf import write_gguf
    from lmtune.shipping.gguf.lora import apply_lora_gguf, write_lora_gguf

    run = source.resolve().name
    adapter, base = f"{run}-lora-f32.gguf", f"{run}-base-{quant}.gguf"
    lora = write_lora_gguf(shippable.model, staging / adapter, name=f"{run} (LoRA)")
    plain = shippable.model.unload()  # the base model, its layers back as they were before the adapter
    write_gguf(plain.float(), shippable.tokenizer, staging / base, quant, name=f"{run} base")
    echo(f"written {base} and {adapter}; loading both back with transformers and gguf to check ...")
    reloaded = _read_gguf(staging / base, plain.config)
    apply_lora_gguf(reloaded, staging / adapter)
    result = {"format": "gguf", "quant": quant, "file": base, "adapter_file": adapter, **lora}
    result.update(check.compare(reloaded, ref, shippable.tokenizer))
    result["size_bytes"] = (staging / base).stat().st_size
    result["adapter_size_bytes"] = (staging / adapter).stat().st_size
    return result


def _read_gguf(path: Path, config: Any) -> Any:
    """The GGUF file as transformers' own GGUF reader loads it (independent of lmtune's writer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmtune.shipping.gguf import reader_config

    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, config=reader_config(config), dtype=torch.float32
    ).eval()


def _base_dtype(base: str) -> Any:
    """The dtype the base model was published in (float32 when unknown): merged weights go back to it."""
    import torch

    try:
        config = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return torch.float32
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if name in ("bfloat16", "float16") else torch.float32


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _umask_permissions(folder: Path) -> None:
    """Libraries write some files through mkstemp (mode 0600); an export is for others to read."""
    mode = 0o666 & ~current_umask()
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)
