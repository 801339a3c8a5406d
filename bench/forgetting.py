#!/usr/bin/env python3
"""The demo's task gain against its cost in general ability, for several training settings.

Each setting is ``configs/demo.yaml`` with a few ``--set`` overrides, run as its own
``lmtune train`` process on the generated demo data.  Read back from each run's
``metrics.json``: the fine-tuned model's BLEU on the 60 held-out rows, the forgetting figure
(perplexity on the general-knowledge set after / before, in percent) and the training time.

    .venv/bin/python bench/forgetting.py                        # every setting below
    .venv/bin/python bench/forgetting.py --only lr3e-4,attn     # some of them
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from speed import cpu_model  # bench/ is on the path when a bench runs as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CONFIG = ROOT / "configs" / "demo.yaml"
REPLAY = ["continual.reference=general-fit"]
ATTENTION = "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"

# name -> overrides of configs/demo.yaml
SETTINGS: dict[str, list[str]] = {
    "demo": [],
    "lr5e-4": ["training.learning_rate=5e-4"],
    "lr3e-4": ["training.learning_rate=3e-4"],
    "attn": [ATTENTION],
    "attn-lr5e-4": [ATTENTION, "training.learning_rate=5e-4"],
    "replay10": [*REPLAY, "continual.replay_fraction=0.1"],
    "ewc": [*REPLAY, "continual.ewc_weight=5000"],
    "r8": ["lora.r=8", "lora.alpha=16"],
}


def run_setting(name: str, overrides: list[str], work: Path, config: Path) -> dict[str, Any]:
    out = work / "runs" / name
    cmd = [sys.executable, "-m", "lmtune", "train", str(config), "--overwrite"]
    # the base model's own scores do not depend on the setting: measured once, in the "demo" row
    skip_base = [] if name == "demo" else ["eval.base=false"]
    for item in [f"training.output_dir={out}", *skip_base, *overrides]:
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, cwd=work)
    m = json.loads((out / "metrics.json").read_text())
    f = m["forgetting"]
    return {
        "setting": name,
        "overrides": overrides,
        "bleu": round(m["finetuned"]["bleu"]["bleu"], 4),
        "base_bleu": round(m["base"]["bleu"]["bleu"], 4) if "base" in m else None,
        "perplexity": round(m["finetuned"]["perplexity"], 3),
        "general_ppl_base": round(f["base_perplexity"], 3),
        "general_ppl_finetuned": round(f["finetuned_perplexity"], 3),
        "forgetting_percent": round(f["perplexity_increase_percent"], 1),
        "stopped_at_eos": m["finetuned"]["generation"]["stopped_at_eos"],
        "train_time_s": round(m["train_time_s"], 1),
        "train_examples": m["run"]["train_examples"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated setting names (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=KEY=VALUE", help="an extra setting")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--work", default="/tmp/lmtune_forgetting")
    a = p.parse_args()
    settings = dict(SETTINGS)
    for item in a.set:
        name, _, override = item.partition("=")
        settings.setdefault(name, []).append(override)
    names = a.only.split(",") if a.only else list(settings)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "lmtune", "data", "demo", "data/demo"], check=True, cwd=work)
    machine = cpu_model() or platform.machine()
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        row = {**run_setting(name, settings[name], work, Path(a.config).resolve()), "machine": machine}
        print(json.dumps(row))
        with (RESULTS / "forgetting.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
