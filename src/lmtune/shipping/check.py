"""Does the exported model behave like the run's own model?  Measured before an export reports success.

The run's model (float32, adapter unmerged) answers a few held-out prompts first; the
written model, loaded back with plain transformers, must give the same logits (within a
tolerance) and greedy answers, and the check answer must end by itself with nothing but
the exported folder's own generation settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECK_PROMPTS = 3
CHECK_NEW_TOKENS = 64
SPEED_NEW_TOKENS = 32
FALLBACK_PROMPTS = ("What is the capital of France?", "Write one sentence about the sea.", "Say hello.")


@dataclass
class Reference:
    """What the run's own model gives on the check prompts."""

    prompts: list[str]
    input_ids: list[list[int]]
    logits: list[Any]  # one float32 tensor (positions x vocab) per prompt
    answers: list[list[int]]  # greedy new tokens, end-of-turn token included when it stopped
    stops: list[int]


def check_prompts(source: Path, limit: int = CHECK_PROMPTS) -> list[str]:
    """Held-out prompts of the run (its evaluated answers, else its test split), else generic ones."""
    for name in ("predictions_finetuned.jsonl", "test.jsonl"):
        path = source / name
        if not path.is_file():
            continue
        prompts = []
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            prompt = row.get("prompt") or _last_user_turn(row.get("messages") or [])
            if prompt and prompt not in prompts:
                prompts.append(prompt)
            if len(prompts) == limit:
                return prompts
        if prompts:
            return prompts
    return list(FALLBACK_PROMPTS[:limit])


def _last_user_turn(messages: list[dict[str, Any]]) -> str | None:
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else None


def prompt_ids(tokenizer: Any, run: dict[str, Any], prompts: list[str]) -> list[list[int]]:
    """Each prompt laid out as the run was trained (its template and system prompt)."""
    from lmtune.data.encode import Encoder

    data = run.get("data") or {}
    encoder = Encoder(tokenizer, data.get("template", "auto"), data.get("system_prompt"), data.get("max_length", 2048))
    return [encoder.question_ids(p) for p in prompts]


def reference(model: Any, tokenizer: Any, prompts: list[str], ids: list[list[int]], stops: list[int]) -> Reference:
    logits = [_logits(model, x) for x in ids]
    answers = [_greedy(model, x, eos=stops, pad=tokenizer.pad_token_id) for x in ids]
    return Reference(prompts, ids, logits, answers, stops)


def compare(exported: Any, ref: Reference, tokenizer: Any) -> dict[str, Any]:
    """Logit and greedy-answer agreement of ``exported`` with the run's model, and whether it stops by itself.

    The exported model generates with its own generation config only (no eos passed in), as a
    user calling ``model.generate`` on the exported folder would.
    """
    diff = max(float((_logits(exported, x) - r).abs().max()) for x, r in zip(ref.input_ids, ref.logits, strict=True))
    answers = [_greedy(exported, x) for x in ref.input_ids]
    same = sum(a == b for a, b in zip(answers, ref.answers, strict=True))
    stopped = _ends_with_stop(answers[0], ref.stops)
    return {
        "max_abs_logit_diff": diff,
        "greedy_match": same / len(answers),
        "stopped": stopped,
        "check_prompt": ref.prompts[0],
        "check_answer": tokenizer.decode(answers[0], skip_special_tokens=True).strip(),
        "run_answer": tokenizer.decode(ref.answers[0], skip_special_tokens=True).strip(),
        "check_prompts": len(answers),
    }


def _ends_with_stop(answer: list[int], stops: list[int]) -> bool:
    return bool(answer) and answer[-1] in stops and len(answer) < CHECK_NEW_TOKENS


def _logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        x = torch.tensor([ids], device=model.device)
        return model(input_ids=x).logits[0].float().cpu()


def _greedy(model: Any, ids: list[int], eos: list[int] | None = None, pad: int | None = None, **kw: Any) -> list[int]:
    import torch

    extra = {"eos_token_id": eos} if eos is not None else {}
    if pad is not None:
        extra["pad_token_id"] = pad
    with torch.inference_mode():
        x = torch.tensor([ids], device=model.device)
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=kw.pop("max_new_tokens", CHECK_NEW_TOKENS),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            **extra,
            **kw,
        )
    return out[0, len(ids) :].tolist()


def tokens_per_second(model: Any, ids: list[list[int]], pad: int | None) -> float:
    """Greedy decoding speed, a fixed number of new tokens per prompt (end-of-turn ignored)."""
    _greedy(model, ids[0], pad=pad, max_new_tokens=4)  # warm-up: first-call allocation and kernel choice
    start = time.perf_counter()
    for x in ids:
        _greedy(model, x, pad=pad, max_new_tokens=SPEED_NEW_TOKENS, min_new_tokens=SPEED_NEW_TOKENS)
    return SPEED_NEW_TOKENS * len(ids) / (time.perf_counter() - start)


def folder_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
