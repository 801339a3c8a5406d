"""A run's model in float32, ready to ship: loaded, adapters merged, end-of-turn tokens known.

Merges happen in float32 (``safe_merge``), never into a quantised base: a QLoRA run's
base is loaded again unquantised, so the merged weights are the ones the adapter was
trained against plus the adapter's update, not a re-rounded 4-bit copy of them
(peft #2321, #1043: merges into 4-bit bases that silently change generations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import ExportError
from lmtune.methods.merge import merged_model

# PEFT methods whose adapter is extra input tokens or cached keys, not a weight update: nothing to merge.
PROMPT_LEARNING = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT", "ADAPTION_PROMPT")
SENTINEL = "\u2063lmtune-answer\u2063"  # an answer text no template contains, to find what follows an answer


@dataclass
class Shippable:
    """The run's own model (float32, adapter still separate) and what exporting it needs."""

    model: Any
    tokenizer: Any
    base: str  # folder or hub id of the base weights
    method: str  # "lora", "full", ... ("model" for a plain folder that is not a run)
    run: dict[str, Any]  # the run's config.yaml, {} for a plain model folder
    is_adapter: bool


def describe_source(source: Path, argument: str = "RUN") -> tuple[str, dict[str, Any]]:
    """(method, run config) of a run folder, model folder or .gguf file; refuses what cannot be exported.

    ``argument`` is what messages call ``source``: the command's argument (``RUN`` for export).
    """
    from lmtune.config import read_yaml
    from lmtune.models import named

    what = named(argument, source)
    if not source.exists():
        raise ExportError(f"{what}: no such run folder, model folder or .gguf file")
    if source.is_file() and source.suffix.lower() != ".gguf":
        raise ExportError(f"{what}: is a file, not a run folder, model folder or .gguf file")
    run = read_yaml(source / "config.yaml") if (source / "config.yaml").is_file() else {}
    adapter_file = source / "adapter_config.json"
    if adapter_file.is_file():
        peft_type = str(json.loads(adapter_file.read_text(encoding="utf-8")).get("peft_type", "")).upper()
        if peft_type in PROMPT_LEARNING:
            raise ExportError(
                f"{what}: a {peft_type.lower()} adapter cannot be merged into the weights (it adds virtual "
                "tokens to every input, not a weight update); use it as it is with `lmtune chat` / "
                "`lmtune generate`, or train with method: lora (or dora, adalora, ia3) to export"
            )
        return str(run.get("method") or peft_type.lower()), run
    if source.is_dir() and not (source / "config.json").is_file():
        raise ExportError(f"{what}: not a run folder or model folder (no adapter_config.json or config.json)")
    return str(run.get("method") or "model"), run


def load_shippable(source: Path, argument: str = "RUN") -> Shippable:
    """The run's model in float32: adapter on an unquantised base, or the full model."""
    from lmtune.config import ModelConfig
    from lmtune.models import load_model

    method, run = describe_source(source, argument)
    model, tokenizer, base = load_model(ModelConfig(name=str(source), dtype="float32"), argument=argument)
    model.eval()
    is_adapter = hasattr(model, "peft_config")
    if not is_adapter and run:
        base = str((run.get("model") or {}).get("name") or base)
    return Shippable(model, tokenizer, base, method, run, is_adapter)


def merge(shippable: Shippable) -> Any:
    """The plain model: the adapter's update added to the float32 base, checked for NaN/inf by PEFT."""
    if not shippable.is_adapter:
        return shippable.model
    return merged_model(shippable.model)


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Every token the trained layout ends an answer with: EOS, and the template's end-of-turn token.

    Found by rendering a one-turn conversation and reading the special tokens right after the
    answer (``<|im_end|>`` for ChatML templates, ``<|eot_id|>`` for Llama 3's), so a plain
    ``model.generate`` stops where the fine-tuned model learned to stop.
    """
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False)
        except Exception:  # noqa: BLE001 - templates raise what they like (e.g. "roles must alternate")
            text = ""
        if SENTINEL in text:
            special = set(tokenizer.all_special_ids) | {
                i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
            }
            after = tokenizer(text.split(SENTINEL, 1)[1], add_special_tokens=False)["input_ids"]
            for token in after:
                if token not in special:
                    break
                if token not in ids:
                    ids.append(token)
    return ids


def set_generation_stops(model: Any, tokenizer: Any) -> list[int]:
    """Write the end-of-turn tokens into the model's generation config; returns them."""
    stops = end_of_turn_ids(tokenizer)
    gen = model.generation_config
    gen.eos_token_id = stops if len(stops) > 1 else (stops[0] if stops else None)
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if gen.bos_token_id is None and tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    return stops


def bake_system_prompt(tokenizer: Any, run: dict[str, Any]) -> bool:
    """Make the run's training system prompt the exported template's default one.

    A run trained with ``data.system_prompt`` answers best with that system message; users of
    the exported model (``apply_chat_template``, servers, Ollama) mostly send none, and the
    template would then add its own default.  Prepending one Jinja statement keeps the rest of
    the template as it is, and a system message the caller does send still wins.
    """
    system = (run.get("data") or {}).get("system_prompt")
    template = getattr(tokenizer, "chat_template", None)
    if not system or not isinstance(template, str) or not _takes_system_turns(tokenizer):
        return False  # a template that refuses system turns (Gemma 2) would then refuse every conversation
    default = json.dumps(system)  # a JSON string is a valid Jinja string literal
    tokenizer.chat_template = (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {default}}}] + messages %}}"
        "{%- endif %}" + template
    )
    return True


def _takes_system_turns(tokenizer: Any) -> bool:
    try:
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - templates raise what they like ("System role not supported")
        return False
    return True
