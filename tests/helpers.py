"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "smollm2-135m-instruct"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# Predictions and references for the text metrics (BLEU, ROUGE, chrF) against their libraries.
PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "rain is expected in Oslo on Monday",
    "completely unrelated words here",
]
SINGLE_REFS = [
    ["the cat is sitting on the mat"],
    ["the quick brown fox jumped over the lazy dog"],
    ["Expect rain in Oslo on Monday, with light winds."],
    ["the sun shines in Lisbon"],
]
MULTI_REFS = [
    ["the cat is sitting on the mat", "a cat sat on the mat"],
    ["the quick brown fox jumped over the lazy dog"],
    ["Expect rain in Oslo on Monday, with light winds.", "Rain is expected in Oslo on Monday.", "Oslo: rain."],
    ["the sun shines in Lisbon"],
]


TRAIN_ROWS = [
    {"prompt": f"Add {a} and {b}.", "completion": f"{a} plus {b} is {a + b}."} for a in range(4) for b in range(4)
]
EVAL_ROWS = [
    {"prompt": "Add 5 and 1.", "completion": "5 plus 1 is 6."},
    {"prompt": "Add 2 and 7.", "completion": ["2 plus 7 is 9.", "The sum of 2 and 7 is 9."]},
    {"prompt": "Add 6 and 6.", "completion": "6 plus 6 is 12."},
    {"prompt": "Add 8 and 0.", "completion": "8 plus 0 is 8."},
    {"prompt": "Add 3 and 9.", "completion": "3 plus 9 is 12."},
]


def tiny_llama_config(tokenizer: Any, **overrides: Any) -> Any:
    """The tiny random Llama-style model's config (conftest's ``tiny_llama_dir``), with ``overrides``."""
    from transformers import LlamaConfig

    return LlamaConfig(**{
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
        **overrides,
    })  # fmt: skip


def tiny_run_raw(model_dir: Path, train: Path, held_out: Path, out: Path, method: str = "lora") -> dict[str, Any]:
    """A run config (as raw YAML data) sized so a run on a tiny model takes a few seconds.

    The ``lora`` section is there for the LoRA family only: a section the method does not read is an error."""
    lora = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
    return {
        "seed": 0,
        "model": {"name": str(model_dir), "dtype": "float32"},  # exact comparisons; auto is tested on its own
        "method": method,
        **(lora if method in ("lora", "dora", "qlora") else {}),
        "data": {"train": str(train), "eval": str(held_out), "max_length": 96},
        "training": {
            "output_dir": str(out),
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "dataloader_num_workers": 0,
        },
        # the safety probe (on by default for chat models) has its own tests: tests/test_safety.py
        "eval": {"max_samples": 4, "max_new_tokens": 8, "batch_size": 4, "safety": False},
    }


def save_llama_reward(folder, tokenizer, pad_on_config: bool = True):
    """A tiny random Llama reward model: its head reads the last real token, found with pad_token_id."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id if pad_on_config else None,
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium; `make test` installs it when run as root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def open_in_chromium(page_file: Path, screenshot: Path) -> dict[str, Any]:
    """Render a page in headless Chromium; returns the first seed table's text and each image's load state."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_file.resolve().as_uri())
            page.wait_for_load_state("load")
            table = page.locator("table.seed").first
            seen = {
                "table_visible": table.is_visible(),
                "table": table.inner_text(),
                "images": dict(
                    page.eval_on_selector_all("img", "els => els.map(i => [i.alt, i.complete && i.naturalWidth > 0])")
                ),
            }
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def lmtune(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m lmtune ARGS`` in its own process, its output captured; a command that does not end in
    ``timeout`` seconds fails the test with what it printed (where it was stuck)."""
    try:
        return subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        said = "\n".join(_text(x)[-3000:] for x in (e.stdout, e.stderr))
        raise AssertionError(f"lmtune {' '.join(args)}: still running after {timeout} s; it printed:\n{said}") from None


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training line of a run's train_log.jsonl."""
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    return [(x["step"], x["loss"]) for x in lines if "loss" in x]


PAIRS = [
    {"prompt": f"Add {a} and {b}.", "chosen": f"{a} plus {b} is {a + b}.", "rejected": f"{a} plus {b} is {a + b + 3}."}
    for a in range(4)
    for b in range(4)
]
"""Preference pairs for tiny runs: the right sum chosen over a wrong one."""
