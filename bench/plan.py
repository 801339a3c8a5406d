#!/usr/bin/env python3
"""``lmtune plan`` against the runs it predicts: peak memory and training time, predicted vs measured.

For each config: ``lmtune plan CONFIG`` in its own process (its printed prediction), then ``lmtune
train CONFIG`` in another, whose peak resident memory comes from ``wait4`` (as in ``bench/speed.py``)
and whose training time is ``train_time_s`` of its ``metrics.json``; the plan that ``lmtune train`` itself printed
before training is shown beside it. Three configs by default, and a fourth on request:

- demo: ``configs/demo.yaml`` as shipped (LoRA all-linear, chat layout, evaluations, replay);
- e2e-defaults: 1,000 E2E rows (../shared/data/e2e) with lmtune's defaults (only the data and output set);
- e2e-full: 256 E2E rows, full fine-tuning, float32;
- e2e-full-no-trim: the same with ``training.trim_memory: false`` (what the trim costs and saves).

    .venv/bin/python bench/plan.py            # writes bench/results/plan.{md,json}
    .venv/bin/python bench/plan.py --only e2e-full,e2e-full-no-trim --output bench/results/plan-trim
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import RESULTS, ROOT, cpu_model, e2e_pairs, run_measured  # noqa: E402

LMTUNE = [sys.executable, "-m", "lmtune"]


def e2e_files(folder: Path, rows: int) -> tuple[Path, Path]:
    train, held_out = e2e_pairs(rows, 60)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pairs in (("train", train), ("eval", held_out)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"input": p, "output": c}) + "\n" for p, c in pairs))
        paths.append(path)
    return paths[0], paths[1]


def configs(work: Path) -> dict[str, list[str]]:
    """name -> (config file, --set overrides)"""
    train, held_out = e2e_files(work / "e2e1000", 1000)
    small, small_eval = e2e_files(work / "e2e256", 256)
    minimal = work / "defaults.yaml"
    minimal.write_text(f"data:\n  train: {train}\n  eval: {held_out}\n")
    runs = {
        "demo": [str(ROOT / "configs" / "demo.yaml"), "--set", f"training.output_dir={work / 'run-demo'}"],
        "e2e-defaults": [str(minimal), "--set", f"training.output_dir={work / 'run-e2e-defaults'}"],
        "e2e-full": [
            str(minimal),
            "--set",
            "method=full",
            "--set",
            f"data.train={small}",
            "--set",
            f"data.eval={small_eval}",
            "--set",
            f"training.output_dir={work / 'run-e2e-full'}",
            "--set",
            "training.learning_rate=2e-5",
        ],  # fmt: skip
    }
    # the same full fine-tuning without the memory trim: what the trim costs in time and saves in memory
    full = runs["e2e-full"]
    runs["e2e-full-no-trim"] = [*full[:-4], "--set", f"training.output_dir={work / 'run-e2e-full-no-trim'}",
                                *full[-2:], "--set", "training.trim_memory=false"]  # fmt: skip
    return runs


def predicted(stdout: str) -> tuple[float, float]:
    peak = re.search(r"predicted peak memory\s+([\d,]+) MB", stdout)
    seconds = re.search(r"predicted training time\s+([\d,]+) s", stdout)
    if not peak or not seconds:
        raise SystemExit(f"no plan in the output:\n{stdout[-2000:]}")
    return float(peak.group(1).replace(",", "")), float(seconds.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="demo,e2e-defaults,e2e-full")
    p.add_argument("--output", default=str(RESULTS / "plan"))
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmtune_plan_"))
    rows = []
    for name, args in configs(work).items():
        if name not in a.only.split(","):
            continue
        print(f"[{name}] plan ...", flush=True)
        out, _ = run_measured([*LMTUNE, "plan", *args], ROOT)
        peak_mb, seconds = predicted(out)
        print(f"[{name}] train ...", flush=True)
        train_out, measured_peak = run_measured([*LMTUNE, "train", *args, "--overwrite"], ROOT)
        # the plan ``lmtune train`` printed before training, in the process it predicts (no machine drift between)
        own_seconds = predicted(train_out)[1]
        folder = Path(args[args.index(next(x for x in args if x.startswith("training.output_dir=")))].split("=", 1)[1])
        metrics = json.loads((folder / "metrics.json").read_text())
        rows.append({"config": name, "predicted_peak_mb": peak_mb, "measured_peak_mb": measured_peak,
                     "predicted_train_s": seconds, "measured_train_s": metrics["train_time_s"],
                     "train_own_plan_s": own_seconds,
                     "train_examples": metrics["run"]["train_examples"]})  # fmt: skip
    lines = [f"Machine: {cpu_model()}.", "",
             "| config | train examples | predicted peak MB | measured peak MB | error | predicted train s | "
             "measured train s | error | lmtune train's own plan s | error |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        mem_err = 100 * (r["predicted_peak_mb"] / r["measured_peak_mb"] - 1)
        time_err = 100 * (r["predicted_train_s"] / r["measured_train_s"] - 1)
        own_err = 100 * (r["train_own_plan_s"] / r["measured_train_s"] - 1)
        lines.append(f"| {r['config']} | {r['train_examples']} | {r['predicted_peak_mb']:,.0f} | "
                     f"{r['measured_peak_mb']:,.0f} | {mem_err:+.0f}% | {r['predicted_train_s']:,.0f} | "
                     f"{r['measured_train_s']:,.0f} | {time_err:+.0f}% | {r['train_own_plan_s']:,.0f} | "
                     f"{own_err:+.0f}% |")  # fmt: skip
    output = Path(a.output)
    output.with_suffix(".json").write_text(json.dumps({"machine": cpu_model(), "rows": rows}, indent=2) + "\n")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
