#!/usr/bin/env python3
"""Answer quality on E2E (data-to-text) with lmtune's defaults, scored the way the benchmark is.

Training data: ``--train-rows`` rows of ``../shared/data/e2e/devset.csv`` (one human reference per
row), drawn from inputs that are never held out.  Held-out data: ``--eval-inputs`` distinct inputs,
written one row per reference, as a user would have them; lmtune groups the rows that share a
prompt into one evaluation example whose references are all of them.  Nothing else is set but the
paths and the run folder (``--set`` adds overrides), so the run shows the defaults.

Scored here from the run's ``predictions_*.jsonl``: one greedy answer per distinct input against all
its references with ``sacrebleu.corpus_bleu(lowercase=True)`` — E2E's official convention — plus the
share of answers that ended with the end-of-sequence token, training time and training tokens.

    .venv/bin/python bench/e2e_quality.py                      # defaults
    .venv/bin/python bench/e2e_quality.py --set data.system_prompt=null --name default_system
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from speed import cpu_model  # bench/ is on the path when a bench runs as a script

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT.parent / "shared" / "data" / "e2e" / "devset.csv"
RESULTS = ROOT / "bench" / "results"


def write_data(folder: Path, train_rows: int, eval_inputs: int, seed: int = 0) -> tuple[Path, Path]:
    """train.jsonl (prompt/completion) and eval.jsonl (one row per reference of each held-out input)."""
    refs: dict[str, list[str]] = defaultdict(list)
    with E2E.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            refs[row["mr"]].append(row["ref"])
    inputs = sorted(refs)
    random.Random(seed).shuffle(inputs)
    held, rest = inputs[:eval_inputs], inputs[eval_inputs:]
    pool = [(mr, ref) for mr in rest for ref in refs[mr]]
    random.Random(seed).shuffle(pool)
    folder.mkdir(parents=True, exist_ok=True)
    train, held_out = folder / "train.jsonl", folder / "eval.jsonl"
    write = lambda path, pairs: path.write_text(  # noqa: E731
        "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs), encoding="utf-8"
    )
    write(train, pool[:train_rows])
    write(held_out, [(mr, ref) for mr in held for ref in refs[mr]])
    return train, held_out


def score(run: Path) -> dict[str, Any]:
    import sacrebleu

    out: dict[str, Any] = {}
    for name in ("base", "finetuned"):
        path = run / f"predictions_{name}.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        refs = [r["reference"] if isinstance(r["reference"], list) else [r["reference"]] for r in rows]
        width = max(map(len, refs))
        streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
        bleu = sacrebleu.corpus_bleu([r["prediction"] for r in rows], streams, lowercase=True)
        out[name] = {
            "bleu_lowercase": round(bleu.score / 100, 4),
            "inputs": len(rows),
            "references_per_input": round(sum(map(len, refs)) / len(refs), 2),
            "stopped": f"{sum(r['stopped'] for r in rows)}/{len(rows)}",
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--eval-inputs", type=int, default=50)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="lmtune config override")
    p.add_argument("--name", default="defaults", help="label of this run in the results file")
    p.add_argument("--work", default="/tmp/lmtune_e2e", help="folder for data and run folders")
    a = p.parse_args()

    work = Path(a.work)
    train, held_out = write_data(work / "data", a.train_rows, a.eval_inputs)
    run = work / "runs" / a.name
    config = work / "e2e.yaml"
    config.write_text(f"data:\n  train: {train}\n  eval: {held_out}\ntraining:\n  output_dir: {run}\n")
    cmd = [sys.executable, "-m", "lmtune", "train", str(config), "--overwrite"]
    for item in a.set:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    phases = metrics["run"].get("phases_s", {})
    data_report = json.loads((run / "data_report.json").read_text())
    result = {
        "name": a.name,
        "overrides": a.set,
        "train_rows": a.train_rows,
        "eval_inputs": a.eval_inputs,
        **score(run),
        "lmtune_bleu_cased": {k: metrics[k]["bleu"]["bleu"] for k in ("base", "finetuned") if k in metrics},
        "perplexity": {k: metrics[k]["perplexity"] for k in ("base", "finetuned") if k in metrics},
        "train_time_s": round(metrics["train_time_s"], 1),
        "train_tokens": data_report["tokens"]["total"],
        "wall_s": round(wall, 1),
        # where the wall time went: the run's own phases, and the rest (start-up, imports, the report)
        "phases_s": {**phases, "startup_and_report": round(wall - sum(phases.values()), 1)},
        "machine": cpu_model() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "e2e_quality.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
