#!/usr/bin/env python3
"""How fast `lmtune data check` goes through a large JSONL file, and how its memory grows.

Writes N rows (the demo generator's weather records with a share of exact
duplicates, plus GSM8K rows from ../shared/data when present, for longer and
more varied lengths), runs `lmtune data check` on them in a child process, and
prints wall time and peak resident memory for each size.

    .venv/bin/python bench/data_check.py --rows 10000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmtune.config import EMBEDDED_MODEL
from lmtune.data.demo import make_row
from lmtune.models import resolve

RESULTS = Path(__file__).resolve().parent / "results" / "data_check.txt"
SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    gsm = []
    if SHARED_GSM8K.is_file():
        gsm = [json.loads(line) for line in SHARED_GSM8K.read_text(encoding="utf-8").splitlines()]
    prev: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            if gsm and i % 5 == 0:  # one row in five is a longer GSM8K question and worked answer
                g = gsm[(i // 5) % len(gsm)]
                row = {"prompt": g["question"], "completion": g["answer"]}
            elif i % 50 == 1 and prev:  # 2% exact duplicates
                row = prev
            else:
                row = make_row(rng)
            prev = row
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_check(path: Path, out: Path, model: str, cache: str) -> tuple[float, float]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "lmtune", "data", "check", str(path), "--output", str(out), "--model", model]
    # a cold token cache: the benchmark measures reading, cleaning and tokenising
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "LMTUNE_CACHE": cache})
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10000, 50000])
    a = p.parse_args()
    lines = [f"{'rows':>8}  {'file MiB':>8}  {'wall s':>7}  {'peak RSS MiB':>12}  {'train tokens':>12}"]
    print(lines[0])
    model = str(resolve(EMBEDDED_MODEL))  # the converted tokenizer, so the child needs no conversion
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.rows:  # ru_maxrss of children is a running maximum: go from small to large
            path = Path(tmp) / f"rows{n}.jsonl"
            write_rows(path, n)
            report = Path(tmp) / f"report{n}.json"
            wall, peak = run_check(path, report, model, str(Path(tmp) / f"cache{n}"))
            tokens = json.loads(report.read_text())["tokens"]["total"]
            lines.append(f"{n:>8}  {path.stat().st_size / 2**20:>8.1f}  {wall:>7.1f}  {peak:>12.0f}  {tokens:>12,}")
            print(lines[-1])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
