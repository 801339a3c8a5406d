#!/usr/bin/env python3
"""What tuning cost in refusals: the safety probe on the demo, and on a run made to be unsafe.

Four ``lmtune train`` processes on the embedded SmolLM2-135M-Instruct, each probing the base and the tuned model:

* ``demo``: ``configs/demo.yaml`` as ``make demo`` runs it (the generated weather task);
* ``compliant``: Qi et al. 2023's setting, small: LoRA on 32 eager, harmless answers to borderline requests
  (``safety_rows.COMPLIANT_ROWS``; 8 more held out), no system prompt, a learning rate high enough to move the
  model in a few steps.  The rows teach readiness to comply, nothing harmful.
* ``aligned``: the embedded model barely refuses (about 8% of the harmful set), so there is little to lose; this
  run gives it refusals to lose (``safety_rows.ALIGNING_ROWS``: refusals of harmful requests the probe does not
  ask, help with harmless ones);
* ``aligned-then-compliant``: ``compliant`` again, from the ``aligned`` model merged (``lmtune export``).

Read back from each run's ``metrics.json``: refusal rates on the harmful and look-alike sets (base -> tuned),
the warning, the seconds each probe took; and the seconds ``eval.benchmarks`` adds offline (loading lm-eval's
task index to find the hub tasks unreachable).  Writes ``bench/results/safety.md`` and ``.json``.

    .venv/bin/python bench/safety.py                # every run (~25 min on 2 cores)
    .venv/bin/python bench/safety.py --only compliant
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from safety_rows import ALIGNING_ROWS, COMPLIANT_ROWS  # bench/ is on the path when a bench runs as a script
from speed import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "safety"
LMTUNE = [sys.executable, "-m", "lmtune"]


def demo_run(out: Path) -> list[str]:
    subprocess.run([*LMTUNE, "data", "demo", str(WORK / "demo-data")], check=True, cwd=ROOT)
    return ["train", "configs/demo.yaml", "--overwrite", "--set", f"training.output_dir={out}",
            "--set", f"data.train={WORK / 'demo-data' / 'train.jsonl'}",
            "--set", f"data.eval={WORK / 'demo-data' / 'eval.jsonl'}"]  # fmt: skip


def small_run(name: str, out: Path, rows: list[dict[str, str]], model: str, every: int = 0) -> list[str]:
    """LoRA on ``rows``, 5 epochs at lr 1e-3, no system prompt, probe on.  Held out: the first 8 rows, or
    with ``every`` each every-th row (rows ordered by kind)."""
    data = WORK / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    held = set(range(0, len(rows), every)) if every else set(range(8))
    parts = ([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])
    for split, part in zip(("train", "eval"), parts, strict=True):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    config = {
        "model": {"name": model},
        "method": "lora",
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl"), "max_length": 256},
        "training": {
            "output_dir": str(out),
            "num_train_epochs": 5,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "lr_scheduler_type": "constant",
            "save_strategy": "no",
            "logging_steps": 1,
        },  # fmt: skip
        "eval": {"max_samples": 8, "max_new_tokens": 64, "safety": True},
    }
    path = data / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return ["train", str(path), "--overwrite"]


def compliant_run(out: Path) -> list[str]:
    return small_run("compliant", out, COMPLIANT_ROWS, "smollm2-135m-instruct")


def aligned_run(out: Path) -> list[str]:
    """A stand-in for safety alignment: the embedded model tuned to refuse harmful requests (none of the
    probe's) and help with harmless ones, then merged into a plain model folder (``lmtune export``)."""
    return small_run("aligned", out, ALIGNING_ROWS, "smollm2-135m-instruct", every=8)


def aligned_then_compliant_run(out: Path) -> list[str]:
    """Qi et al.'s setting on a model that refuses: the merged aligned model, tuned on the compliant rows."""
    merged = WORK / "aligned-merged"
    subprocess.run([*LMTUNE, "export", str(WORK / "aligned"), "--output", str(merged), "--overwrite"], check=True,
                   cwd=ROOT)  # fmt: skip
    return small_run("aligned-then-compliant", out, COMPLIANT_ROWS, str(merged))


RUNS = {"demo": demo_run, "compliant": compliant_run, "aligned": aligned_run,
        "aligned-then-compliant": aligned_then_compliant_run}  # fmt: skip


def offline_benchmark_seconds() -> float:
    """What eval.benchmarks: [arc_easy, hellaswag] with benchmarks_offline: skip adds to an offline run."""
    code = ("import time; t = time.perf_counter(); from lmtune.evaluate.benchmarks import load_benchmarks; "
            "b = load_benchmarks(['arc_easy', 'hellaswag'], offline='skip'); "
            "print(time.perf_counter() - t, sorted(b.skipped))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return float(done.stdout.split()[0])


def summary(name: str, metrics: dict[str, Any], wall: float) -> dict[str, Any]:
    s = metrics["safety"]
    rates = {
        f"{set_}_{m}": s[m][set_]["refusal_rate"] for set_ in ("harmful", "lookalike") for m in ("base", "finetuned")
    }
    return {"run": name, **rates, "warning": s["warning"], "drop_points": s["drop_points"],
            "probe_s": s["time_s"], "bleu": (metrics["finetuned"].get("bleu") or {}).get("bleu"),
            "bleu_base": (metrics.get("base", {}).get("bleu") or {}).get("bleu"), "wall_s": round(wall, 1),
            "phases_s": metrics["run"]["phases_s"], "train_time_s": metrics["train_time_s"]}  # fmt: skip


def markdown(rows: list[dict[str, Any]], offline_s: float) -> str:
    lines = [f"CPU: {cpu_model()}", "",
             "| run | harmful refused: base -> tuned | look-alikes refused: base -> tuned | warning | "
             "probe s (base + tuned) | run wall s |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['run']} | {100 * r['harmful_base']:.1f}% -> {100 * r['harmful_finetuned']:.1f}% | "
            f"{100 * r['lookalike_base']:.1f}% -> {100 * r['lookalike_finetuned']:.1f}% | "
            f"{'yes' if r['warning'] else 'no'} ({'drop' if r['drop_points'] >= 0 else 'rise'} "
            f"{abs(r['drop_points']):.1f} pts) | "
            f"{r['probe_s']['base']:.1f} + {r['probe_s']['finetuned']:.1f} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        f"eval.benchmarks [arc_easy, hellaswag] offline (skipped): {offline_s:.1f} s to find them unreachable",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated: " + ", ".join(RUNS))
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}", flush=True)
    rows = []
    for name in args.only.split(","):
        out = WORK / name
        command = RUNS[name](out)
        start = time.perf_counter()
        subprocess.run([*LMTUNE, *command], check=True, cwd=ROOT)
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        rows.append(summary(name, metrics, time.perf_counter() - start))
        print(json.dumps(rows[-1]), flush=True)
    offline_s = offline_benchmark_seconds()
    RESULTS.mkdir(exist_ok=True)
    if (RESULTS / "safety.json").exists():  # runs not re-run this time keep their row, in the order of RUNS
        kept = {r["run"]: r for r in json.loads((RESULTS / "safety.json").read_text())["runs"]}
        kept.update({r["run"]: r for r in rows})
        rows = [kept[name] for name in RUNS if name in kept]
    (RESULTS / "safety.json").write_text(json.dumps({"runs": rows, "offline_benchmarks_s": offline_s}, indent=1))
    (RESULTS / "safety.md").write_text(markdown(rows, offline_s))
    print(markdown(rows, offline_s))


if __name__ == "__main__":
    main()
