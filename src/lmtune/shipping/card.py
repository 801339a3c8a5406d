"""What travels with an exported model: a model card (``README.md``); the Ollama ``Modelfile`` is ``ollama.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.shipping.merge import Shippable


def model_card(source: Path, shippable: Shippable, result: dict[str, Any], stops: list[str]) -> str:
    """A Hugging Face model card: base, method, data fingerprint, before/after table, how to use it."""
    from lmtune.report.tables import markdown_table

    run = shippable.run
    record = _read_json(source / "run_record.json") or {}
    metrics = _read_json(source / "metrics.json")
    data = record.get("data") or {}
    front = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [lmtune, fine-tuned]",
        *([f"base_model: {shippable.base}"] if not Path(shippable.base).is_absolute() else []),
        "---",
        "",
    ]
    lines = [
        f"# {source.resolve().name} ({result['format']}{', ' + result['quant'] if result.get('quant') else ''})",
        "",
        f"Fine-tuned with [lmtune](https://pypi.org/project/lmtune/) from the run folder `{source}`.",
        "",
        f"- **Base model**: `{shippable.base}`",
        f"- **Method**: {shippable.method}{' (adapter merged in float32)' if shippable.is_adapter else ''}",
        f"- **Stops at**: {', '.join(f'`{s}`' for s in stops)} (`generation_config.json` `eos_token_id`)",
    ]
    if run.get("data", {}).get("system_prompt") is not None:
        lines.append(
            f"- **System prompt used in training**: {run['data']['system_prompt']!r} (the chat template's default "
            "here: a conversation without a system message gets it)"
        )
    if data:
        lines += ["", "## Data", "", "| file | sha256 |", "| --- | --- |"]
        lines += [f"| `{name}` | `{digest.removeprefix('sha256:')[:16]}…` |" for name, digest in data.items()]
    if metrics:
        lines += ["", "## Before and after fine-tuning (held-out data)", "", markdown_table(metrics)]
    lines += ["", "## Export check", "", _check_lines(result), "", "## Use", "", _usage(result)]
    return "\n".join(front + lines) + "\n"


def _check_lines(result: dict[str, Any]) -> str:
    check = result.get("check") or {}
    nmse = f"NMSE of the logits {check['nmse']:.2e} (at most {check['nmse_max']:g}), " if "nmse" in check else ""
    verdict = ""
    if check.get("accepted_degraded"):
        verdict = " **The check failed; this copy was written anyway as asked (`--accept-degraded`).**"
    return (
        f"Loaded back with plain transformers and compared with the run's own model on "
        f"{result.get('check_prompts', 0)} held-out prompts: {nmse}max |Δlogit| {result['max_abs_logit_diff']:.2e}, "
        f"identical greedy answers {result['greedy_match']:.0%}, check answer ended by itself: "
        f"{'yes' if result['stopped'] else 'no'}.{verdict}"
    )


def _usage(result: dict[str, Any]) -> str:
    if result["format"] == "gguf":
        name = result["file"]
        lora = f" --lora {result['adapter_file']}" if result.get("adapter_file") else ""
        return (
            f"```bash\nollama create my-model -f Modelfile && ollama run my-model\nllama-cli -m {name}{lora} -cnv\n```"
        )
    return (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained("PATH")\n'
        'model = AutoModelForCausalLM.from_pretrained("PATH")\n'
        'messages = [{"role": "user", "content": "..."}]\n'
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
        "return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=128)\n"
        'print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))\n'
        "```"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
