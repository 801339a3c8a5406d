#!/usr/bin/env python3
"""The demo's task gain against its cost in general ability, for several training settings.

Each setting is ``configs/demo.yaml`` with a few ``--set`` overrides, run as its own
``lmtune train`` process on the generated demo data.  Read back from each run's
``metrics.json``: the fine-tuned model's BLEU on the 60 held-out rows, the forgetting figure
(perplexity on the general-knowledge set after / before, in percent) and the training time.

    .venv/bin/python bench/forgetting.py                        # every setting below
    .venv/bin/python bench/forgetting.py --only lr3e-4,attn     # some of them
    .venv/bin/python bench/forgetting.py --rescore               # the independent check of finished runs

The forgetting figure's set is lmtune's 24 built-in general questions; replay trains on the other 24,
which are of the same style.  So every run is also checked on a set of another kind that no setting
trains on: the 175 Stanford Alpaca seed tasks (``../shared/data/alpaca/seed_tasks.jsonl``, general
instructions and their answers), perplexity of the run's model against the base model's, through
``lmtune eval`` with the run's own layout.
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
    "replay5": [*REPLAY, "continual.replay_fraction=0.05"],
    "attn-replay10": [ATTENTION, *REPLAY, "continual.replay_fraction=0.1"],
    "lr5e-4-replay10": ["training.learning_rate=5e-4", *REPLAY, "continual.replay_fraction=0.1"],
    "replay20": [*REPLAY, "continual.replay_fraction=0.2"],
}


SEED_TASKS = ROOT.parent / "shared" / "data" / "alpaca" / "seed_tasks.jsonl"
DEMO_SYSTEM = "You write one-sentence weather forecasts."


def write_seed_tasks(path: Path, max_length: int = 256) -> Path:
    """The Alpaca seed tasks as prompt/completion rows (first instance of each), in a scratch file.

    Only rows that fit the demo's ``data.max_length`` in its layout: ``lmtune eval`` cuts rows at the
    run's max_length but the base model's at 2048, and cut rows would not compare like for like.
    """
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import to_example
    from lmtune.models import load_tokenizer, resolve

    encoder = Encoder(load_tokenizer(resolve("smollm2-135m-instruct")), system_prompt=DEMO_SYSTEM)
    rows = []
    for line in SEED_TASKS.read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        first = task["instances"][0]
        prompt = task["instruction"] + (f"\n\n{first['input']}" if first["input"] else "")
        row = {"prompt": prompt, "completion": first["output"]}
        if len(encoder.encode(to_example(row, "prompt_completion"), truncate=False)["input_ids"]) <= max_length:
            rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def independent_perplexity(model: str, data: Path, work: Path) -> float:
    out = work / "independent" / f"{Path(model).name}.json"
    cmd = [sys.executable, "-m", "lmtune", "eval", "--model", model, "--data", str(data)]
    cmd += ["--metrics", "perplexity", "--output", str(out), "--system-prompt", DEMO_SYSTEM]
    subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["perplexity"]


def rescore(names: list[str], work: Path) -> None:
    """Perplexity on the Alpaca seed tasks: the base model, then every finished run, as percent change."""
    data = write_seed_tasks(work / "seed_tasks.jsonl")
    base = independent_perplexity("smollm2-135m-instruct", data, work)
    n = len(data.read_text().splitlines())
    print(json.dumps({"setting": "base", "seed_tasks_ppl": round(base, 3), "seed_tasks_rows": n}))
    for name in names:
        run = work / "runs" / name
        if not (run / "metrics.json").is_file():
            continue
        ppl = independent_perplexity(str(run), data, work)
        row = {
            "setting": name,
            "seed_tasks_rows": n,
            "seed_tasks_ppl": round(ppl, 3),
            "base_seed_tasks_ppl": round(base, 3),
            "seed_tasks_change_percent": round(100 * (ppl / base - 1), 1),
        }
        print(json.dumps(row))
        with (RESULTS / "forgetting_independent.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


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
    p.add_argument("--rescore", action="store_true", help="only the independent check of finished runs")
    a = p.parse_args()
    settings = dict(SETTINGS)
    for item in a.set:
        name, _, override = item.partition("=")
        settings.setdefault(name, []).append(override)
    names = a.only.split(",") if a.only else list(settings)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    if a.rescore:
        return rescore(names, work)
    subprocess.run([sys.executable, "-m", "lmtune", "data", "demo", "data/demo"], check=True, cwd=work)
    machine = cpu_model() or platform.machine()
    for name in names:
        row = {**run_setting(name, settings[name], work, Path(a.config).resolve()), "machine": machine}
        print(json.dumps(row))
        with (RESULTS / "forgetting.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
