"""What bench/gpu/check.py trains on: the sizes of a real and a dry run, the task rows, and models of real
shapes with random weights and SmolLM2's tokenizer."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CARRY = Path(__file__).resolve().parent / "carry"  # what prepare.sh puts here for the offline GPU machine
SHARED = ROOT.parent / "shared"


@dataclass
class Sizes:
    rows: int = 2000
    eval_rows: int = 64
    max_length: int = 256
    batch: int = 16
    big: dict[str, Any] = field(default_factory=lambda: {  # SmolLM2-1.7B
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
        "num_key_value_heads": 32, "head_dim": 64})  # fmt: skip
    small: dict[str, Any] = field(default_factory=dict)  # the embedded 135M model's own shape


DRY = Sizes(rows=64, eval_rows=8, max_length=160, batch=8,
            big={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16},
            small={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 8})  # fmt: skip


def tokenizer_folder() -> Path:
    """SmolLM2's tokenizer: carried by prepare.sh to the GPU machine, else the embedded model's own folder."""
    if (CARRY / "tokenizer" / "tokenizer.json").is_file():
        return CARRY / "tokenizer"
    from lmtune.models import resolve

    return Path(resolve("smollm2-135m-instruct"))


def seed_recipe() -> Path | None:
    for candidate in (CARRY / "seed_recipe.py", SHARED / "bench" / "seed_recipe.py"):
        if candidate.is_file():
            return candidate
    return None


def task_rows(n: int) -> tuple[str, list[dict[str, str]]]:
    """E2E rows (carried by prepare.sh, or ../shared/data), else lmtune's demo task (a clone without ../shared)."""
    carried = CARRY / "e2e.jsonl"
    if carried.is_file():
        return "e2e", [json.loads(x) for x in carried.read_text(encoding="utf-8").splitlines()][:n]
    shared = SHARED / "data" / "e2e" / "devset.csv"
    if shared.is_file():
        import csv
        import random

        with shared.open(encoding="utf-8") as f:
            rows = [{"prompt": r["mr"], "completion": r["ref"]} for r in csv.DictReader(f)]
        random.Random(0).shuffle(rows)  # the file is sorted by input
        return "e2e", rows[:n]
    from lmtune.data.demo import write_demo_data

    train, _ = write_demo_data(Path(tempfile.mkdtemp(prefix="gpu_check_demo_")), n, 0, 0)
    return "demo", [json.loads(x) for x in train.read_text(encoding="utf-8").splitlines()]


def write_data(s: Sizes, work: Path) -> tuple[str, dict[str, Path]]:
    """The task's name, and its rows as files: train / eval (prompt, completion) and pairs / pairs_eval."""
    task, rows = task_rows(s.rows + s.eval_rows)
    train, held = rows[: s.rows], rows[s.rows :]
    files = {"train": work / "train.jsonl", "eval": work / "eval.jsonl",
             "pairs": work / "pairs.jsonl", "pairs_eval": work / "pairs_eval.jsonl"}  # fmt: skip
    dump = lambda path, items: path.write_text("".join(json.dumps(r) + "\n" for r in items))  # noqa: E731
    dump(files["train"], train)
    dump(files["eval"], held)
    # preference pairs: the reference sentence against another input's sentence
    dump(files["pairs"], preference_pairs(train[: max(s.rows // 4, 16)]))
    dump(files["pairs_eval"], preference_pairs(held))
    return task, files


def preference_pairs(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each input's reference sentence, chosen, against another input's sentence, rejected."""
    return [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": rows[(i + 7) % len(rows)]["completion"]}
            for i, r in enumerate(rows)]  # fmt: skip


def make_models(s: Sizes, work: Path) -> dict[str, Any]:
    """Random weights of real shapes (bf16 on disk for the 1.7B shape), with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok_dir = tokenizer_folder()
    made = {}
    for name, shape in (("big", s.big), ("small", s.small)):
        config = AutoConfig.from_pretrained(tok_dir)
        for k, v in shape.items():
            setattr(config, k, v)
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if name == "big" else torch.float32)
        folder = work / name
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tok_dir).save_pretrained(folder)
        made[name] = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the stages' processes get the GPU's memory, not this one's cache
    return made
