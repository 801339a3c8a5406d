#!/usr/bin/env python3
"""Private fine-tuning on the demo: no DP, epsilon 8 and epsilon 1 side by side (``configs/privacy-demo.yaml``).

Each run is ``lmtune train configs/privacy-demo.yaml`` with only ``privacy`` changed (the no-DP run drops
the section: same data, batch, steps and learning rate, no clipping or noise). Writes
``bench/results/privacy.{md,json}``; needs ``lmtune data demo`` first.

    .venv/bin/python bench/privacy.py [--only 8,1,none] [--work FOLDER]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import RESULTS, ROOT, cpu_model  # noqa: E402

CONFIG = ROOT / "configs" / "privacy-demo.yaml"


def run(name: str, epsilon: str, work: Path) -> dict:
    out = work / f"run-{name}"
    sets = ["--set", f"training.output_dir={out}"]
    sets += ["--set", "privacy=null"] if epsilon == "none" else ["--set", f"privacy.target_epsilon={epsilon}"]
    if not (out / "metrics.json").is_file():  # --work of an earlier, unfinished invocation: its finished runs stay
        command = [sys.executable, "-m", "lmtune", "train", str(CONFIG), *sets, "--overwrite"]
        subprocess.run(command, check=True, cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())
    return {"run": name, "privacy": m.get("privacy"), "base": m["base"], "finetuned": m["finetuned"],
            "train_time_s": m["train_time_s"], "steps": m["run"]["steps"]}  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| run | ε (δ) | noise multiplier | steps | PPL | BLEU | ROUGE-L | chrF | train s |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = rows[0]["base"]
    lines.append(f"| base model | - | - | - | {base['perplexity']:.3f} | {base['bleu']['bleu']:.4f} | "
                 f"{base['rouge']['rougeL']:.4f} | {base['chrf']['chrf']:.4f} | - |")  # fmt: skip
    for r in rows:
        p, f = r["privacy"], r["finetuned"]
        eps = f"{p['epsilon']:.2f} ({p['delta']:g})" if p else "-"
        sigma = f"{p['noise_multiplier']:.3f}" if p else "-"
        lines.append(f"| {r['run']} | {eps} | {sigma} | {r['steps']} | {f['perplexity']:.3f} | "
                     f"{f['bleu']['bleu']:.4f} | {f['rouge']['rougeL']:.4f} | {f['chrf']['chrf']:.4f} | "
                     f"{r['train_time_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="8,1,none", help="epsilons to run, 'none' for no DP")
    p.add_argument("--work", help="folder for the run folders (default: a new temporary one)")
    a = p.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="lmtune_privacy_"))
    rows = []
    for eps in a.only.split(","):
        rows.append(run("no DP" if eps == "none" else f"DP ε={eps}", eps, work))
        text = f"Machine: {cpu_model()}.\n\n{table(rows)}\n"
        (RESULTS / "privacy.md").write_text(text)
        (RESULTS / "privacy.json").write_text(json.dumps({"machine": cpu_model(), "rows": rows}, indent=2) + "\n")
        print(text, flush=True)


if __name__ == "__main__":
    main()
