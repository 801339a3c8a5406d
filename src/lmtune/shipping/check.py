"""Does the exported model behave like the run's own model?  Measured before an export reports success.

The run's model (float32, adapter unmerged) answers a few held-out prompts first; the
written model, loaded back with plain transformers, is measured against it — NMSE of the
logits, greedy answers, finite logits — and `lmtune.shipping.gate` says whether that is
close enough for the format; the check answer must also end by itself with nothing but the
exported folder's own generation settings.
"""

from __future__ import annotations

import json
import math
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
    logits: list[Any]  # one float32 tensor (positions x vocab) per prompt, on the prompt + its answer
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
    answers = [_greedy(model, x, eos=stops, pad=tokenizer.pad_token_id) for x in ids]
    logits = [_logits(model, x + a) for x, a in zip(ids, answers, strict=True)]
    return Reference(prompts, ids, logits, answers, stops)


def compare(exported: Any, ref: Reference, tokenizer: Any) -> dict[str, Any]:
    """Logit and greedy-answer agreement of ``exported`` with the run's model, and whether it stops by itself.

    Logits are compared on each prompt followed by the run's own greedy answer, so the answer
    positions count as well as the prompt's.  The exported model generates with its own
    generation config only (no eos passed in), as a user calling ``model.generate`` on the
    exported folder would.
    """
    logits = [_logits(exported, x + a) for x, a in zip(ref.input_ids, ref.answers, strict=True)]
    answers = [_greedy(exported, x) for x in ref.input_ids]
    same = sum(a == b for a, b in zip(answers, ref.answers, strict=True))
    stopped = _ends_with_stop(answers[0], ref.stops)
    return {
        "max_abs_logit_diff": max(float((e - r).abs().max()) for e, r in zip(logits, ref.logits, strict=True)),
        "nmse": nmse(logits, ref.logits),
        "finite": all(bool(e.isfinite().all()) for e in logits),
        "greedy_match": same / len(answers),
        "greedy_token_match": greedy_token_match(logits, ref),
        "stopped": stopped,
        "check_prompt": ref.prompts[0],
        "check_answer": tokenizer.decode(answers[0], skip_special_tokens=True).strip(),
        "run_answer": tokenizer.decode(ref.answers[0], skip_special_tokens=True).strip(),
        "check_prompts": len(answers),
    }


def nmse(logits: list[Any], ref_logits: list[Any]) -> float:
    """Normalised mean squared error of ``logits`` against ``ref_logits``, all prompts pooled.

    ``NMSE = mean((logits - ref)^2) / var(ref)``, both over every position and vocabulary entry of
    every check prompt: llama.cpp's ``check-nmse.py`` (its model-conversion check, which passes
    below 1e-2).  The error's power relative to the logits' own spread, so it reads the same on a
    model whose logits spread over 0.01 (a tiny random one) as over 20, unlike max |Δlogit|.  The
    variance, not the mean square, is the scale: adding one constant to every logit changes no
    probability, and must not make an error look smaller.
    """
    count = sum(r.numel() for r in ref_logits)
    mean = sum(float(r.double().sum()) for r in ref_logits) / count
    error = sum(float(((e.double() - r.double()) ** 2).sum()) for e, r in zip(logits, ref_logits, strict=True))
    spread = sum(float(((r.double() - mean) ** 2).sum()) for r in ref_logits)
    return error / spread if spread > 0 else (0.0 if error == 0 else math.inf)


def greedy_token_match(logits: list[Any], ref: Reference) -> float:
    """Share of the run's answer positions where the export's most likely next token is the run model's.

    Both models read the same text (prompt + the run's greedy answer), so one early difference
    does not count again at every later token, as it would when whole answers are compared.
    """
    same = total = 0
    for e, r, x, a in zip(logits, ref.logits, ref.input_ids, ref.answers, strict=True):
        at = slice(len(x) - 1, len(x) + len(a) - 1)  # the positions that predict the answer's tokens
        same += int((e[at].argmax(-1) == r[at].argmax(-1)).sum())
        total += len(a)
    return same / total if total else 1.0


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
