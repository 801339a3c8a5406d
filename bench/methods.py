#!/usr/bin/env python3
"""Every fine-tuning method on the embedded SmolLM2 and the demo task, same step budget.

Each method runs as its own `lmtune train` process (configs/demo.yaml with
overrides), so train time and peak memory are the method's own.  Prints and
writes a table: trainable params, train time, peak RSS, held-out perplexity /
BLEU / ROUGE-L after training, and the forgetting figure (perplexity change on
the general-knowledge set).  The base model's row comes from the first run.

    .venv/bin/lmtune data demo && .venv/bin/python bench/methods.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A learning rate typical for each method (their papers / PEFT examples); the step budget is shared.
LEARNING_RATES = {
    "full": 1e-4, "freeze": 3e-4, "lora": 1e-3, "dora": 1e-3, "adalora": 2e-3, "ia3": 1e-2,
    "prompt_tuning": 3e-2, "p_tuning": 1e-2, "prefix_tuning": 3e-3,
}  # fmt: skip
EXTRA = {
    "lora+ewc": ["continual.ewc_weight=5000"],
    "lora+replay": ["continual.replay_fraction=0.25"],
}
RUNNER = (
    "import resource, sys; from lmtune.cli import main; rc = main(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
)


def run(name: str, steps: int, out: Path, base: bool, samples: int) -> dict:
    method = name.split("+")[0]
    sets = [
        f"method={method}",
        f"training.max_steps={steps}",
        f"training.learning_rate={LEARNING_RATES[method]}",
        f"training.output_dir={out / name}",
        "training.logging_steps=5",
        f"eval.max_samples={samples}",
        "eval.max_new_tokens=48",
        f"eval.base={str(base).lower()}",
        "eval.reference=data/demo/general_eval.jsonl",
        "continual.reference=data/demo/general_fit.jsonl",
        "adalora.tinit=0.2",
        "adalora.tfinal=0.2",
        *EXTRA.get(name, []),
    ]
    cmd = [sys.executable, "-c", RUNNER, "train", str(ROOT / "configs/demo.yaml")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    metrics = json.loads((out / name / "metrics.json").read_text())
    return {"name": name, "peak_rss_mib": peak_kb / 1024, "metrics": metrics}


def row(name: str, m: dict, params: str, time_s: str, rss: str, forgetting: str) -> str:
    return (
        f"| {name} | {params} | {time_s} | {rss} | {m['perplexity']:.3f} | {m['bleu']['bleu']:.4f} "
        f"| {m['rouge']['rougeL']:.4f} | {forgetting} |"
    )


def table(results: list[dict]) -> str:
    lines = [
        "| method | trainable params | train time (s) | peak RSS (MiB) | held-out PPL | BLEU | ROUGE-L "
        "| forgetting: general PPL change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = results[0]["metrics"]
    lines.append(
        row(
            "base (no training)",
            first["base"],
            "0",
            "-",
            "-",
            f"{first['forgetting']['base_perplexity']:.3f} (reference)",
        )
    )
    for r in results:
        m, run_ = r["metrics"], r["metrics"]["run"]
        f = m["forgetting"]
        lines.append(
            row(
                r["name"], m["finetuned"], f"{run_['trainable_params']:,} ({run_['trainable_percent']:.2f}%)",
                f"{m['train_time_s']:.0f}", f"{r['peak_rss_mib']:.0f}",
                f"{f['perplexity_increase_percent']:+.1f}%",
            )
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--samples", type=int, default=30, help="held-out rows generated for (BLEU / ROUGE)")
    p.add_argument("--methods", nargs="+", default=[*LEARNING_RATES, *EXTRA])
    p.add_argument("--results", default=str(ROOT / "bench/results/methods"))
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(a.methods):
            results.append(run(name, a.steps, Path(tmp), base=i == 0, samples=a.samples))
            print(f"{name}: done", file=sys.stderr, flush=True)
    out = Path(a.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table(results)
    header = f"{a.steps} steps of 8 examples each, demo task, embedded SmolLM2-135M-Instruct, float32 CPU\n\n"
    out.with_suffix(".md").write_text(header + text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(header + text)


if __name__ == "__main__":
    main()
