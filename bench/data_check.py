#!/usr/bin/env python3
"""How fast `lmtune data check` goes through a large JSONL file, and how its memory grows.

Writes N rows (the demo generator's weather records with a share of exact
duplicates, plus GSM8K rows from ../shared/data when present, for longer and
more varied lengths), runs `lmtune data check` on them in a child process, and
prints wall time and peak resident memory for each size.

    .venv/bin/python bench/data_check.py --rows 10000 50000
    .venv/bin/python bench/data_check.py --e2e --rows 50000   # multi-reference rows from E2E

With ``--e2e`` the rows cycle through the shared E2E devset (547 distinct inputs with several
human references each, so the file also holds many exact duplicates), the shape of data-to-text,
summarisation and preference data; the table adds what the report says of duplicates and groups.
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
SHARED_E2E = Path(__file__).resolve().parents[2] / "shared" / "data" / "e2e" / "devset.csv"


def write_e2e_rows(path: Path, n: int, seed: int = 0) -> None:
    import csv

    with SHARED_E2E.open(encoding="utf-8") as f:
        rows = [{"prompt": r["mr"], "completion": r["ref"]} for r in csv.DictReader(f)]
    random.Random(seed).shuffle(rows)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(rows[i % len(rows)], ensure_ascii=False) + "\n")


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
    p.add_argument("--e2e", action="store_true", help="multi-reference rows cycled from the E2E devset")
    a = p.parse_args()
    lines = [f"{'rows':>8}  {'file MiB':>8}  {'wall s':>7}  {'peak RSS MiB':>12}  {'train tokens':>12}"]
    if a.e2e:
        lines[0] += f"  {'duplicates':>10}  {'train rows/prompts':>18}  {'eval rows/prompts -> examples':>29}"
    print(lines[0])
    model = str(resolve(EMBEDDED_MODEL))  # the converted tokenizer, so the child needs no conversion
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.rows:  # ru_maxrss of children is a running maximum: go from small to large
            path = Path(tmp) / f"rows{n}.jsonl"
            (write_e2e_rows if a.e2e else write_rows)(path, n)
            report = Path(tmp) / f"report{n}.json"
            wall, peak = run_check(path, report, model, str(Path(tmp) / f"cache{n}"))
            r = json.loads(report.read_text())
            size, tokens = path.stat().st_size / 2**20, r["tokens"]["total"]
            line = f"{n:>8}  {size:>8.1f}  {wall:>7.1f}  {peak:>12.0f}  {tokens:>12,}"
            if a.e2e:
                g, dup = r["groups"], r["sources"][0]["dropped"].get("duplicate", 0)
                train = f"{g['train']['rows']:,}/{g['train']['prompts']:,}"
                held = f"{g['eval']['rows']:,}/{g['eval']['prompts']:,} -> {r['splits']['eval']:,}"
                line += f"  {dup:>10,}  {train:>18}  {held:>29}"
            lines.append(line)
            print(lines[-1])
    results = RESULTS.with_name("data_check_e2e.txt") if a.e2e else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
