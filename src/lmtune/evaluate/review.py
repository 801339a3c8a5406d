"""Blind human review: a side-by-side sheet of two models' answers, and its win/tie/loss rates.

The sheet hides which model wrote which answer (sides drawn at random per row, rows
shuffled); the key that undoes it is written next to it and read back when scoring.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

from lmtune.errors import DataError
from lmtune.files import atomic_write_text

SHEET_COLUMNS = ("id", "prompt", "reference", "answer_a", "answer_b", "preference")
KEY_COLUMNS = ("id", "a", "b")
CHOICES = {"a": "a", "b": "b", "tie": "tie", "t": "tie", "=": "tie", "same": "tie"}


def key_path(sheet: Path) -> Path:
    return sheet.with_name(sheet.stem + ".key.csv")


def write_review_sheet(
    base: list[dict[str, Any]], finetuned: list[dict[str, Any]], sheet: Path, seed: int = 0
) -> dict[str, Path]:
    """Write the blind sheet (and its key) for answers of two models to the same prompts.

    Refuses to replace an existing sheet or key: a filled-in sheet is hours of someone's work.
    """
    for path in (sheet, key_path(sheet)):
        if path.exists():
            raise DataError(f"{path}: already exists; a review sheet is never overwritten, choose another name")
    pairs = [(b, f) for b, f in zip(base, finetuned, strict=True) if b["prompt"] == f["prompt"]]
    if len(pairs) != len(base):
        raise DataError("the two prediction lists answer different prompts; they cannot be paired")
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    sheet_rows, key_rows = [], []
    for n, i in enumerate(order, start=1):
        b, f = pairs[i]
        sides = [("base", b), ("finetuned", f)]
        rng.shuffle(sides)
        ref = b["reference"] if isinstance(b["reference"], str) else " | ".join(b["reference"])
        sheet_rows.append([n, b["prompt"], ref, sides[0][1]["prediction"], sides[1][1]["prediction"], ""])
        key_rows.append([n, sides[0][0], sides[1][0]])
    sheet.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(sheet, SHEET_COLUMNS, sheet_rows)
    _write_csv(key_path(sheet), KEY_COLUMNS, key_rows)
    return {"sheet": sheet, "key": key_path(sheet)}


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def score_review(sheet: Path) -> dict[str, Any]:
    """Win / tie / loss of the fine-tuned model over the base model from a filled-in sheet.

    ``preference`` takes A, B or tie (also ``t``, ``=``, ``same``), any case; blank rows are
    counted as not yet rated. Every bad cell is reported at once, with its line.
    """
    rows = _read_csv(sheet, SHEET_COLUMNS)
    key_file = key_path(sheet)
    if not key_file.is_file():
        raise DataError(f"{sheet}: its key {key_file} is missing; it was written next to the sheet")
    key = {r["id"]: r for _, r in _read_csv(key_file, KEY_COLUMNS)}
    counts = {"finetuned": 0, "base": 0, "tie": 0}
    unrated, problems = 0, []
    for line, row in rows:
        choice = row["preference"].strip().lower()
        if not choice:
            unrated += 1
            continue
        if choice not in CHOICES:
            problems.append(f"{sheet}:{line}: preference: expected A, B or tie, found {row['preference']!r}")
            continue
        if row["id"] not in key:
            problems.append(f"{sheet}:{line}: id: {row['id']!r} is not in {key_file.name}")
            continue
        picked = CHOICES[choice]
        counts["tie" if picked == "tie" else key[row["id"]][picked]] += 1
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    rated = sum(counts.values())
    share = {k: (v / rated if rated else 0.0) for k, v in counts.items()}
    return {
        "rated": rated,
        "unrated": unrated,
        "finetuned_wins": counts["finetuned"],
        "ties": counts["tie"],
        "base_wins": counts["base"],
        "win_rate": share["finetuned"],
        "tie_rate": share["tie"],
        "loss_rate": share["base"],
    }


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs; the line numbers are those a spreadsheet user sees."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}:1: missing column {missing[0]!r} (expected {', '.join(columns)})")
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (save the sheet as CSV UTF-8)") from None


# --------------------------------------------------------------------------- what lmtune eval prints


def review_from_run(run: Path, sheet: Path) -> None:
    """A review sheet from the answers a run already wrote (base and fine-tuned, same prompts)."""
    files = [run / "predictions_base.jsonl", run / "predictions_finetuned.jsonl"]
    if missing := [f for f in files if not f.is_file()]:
        raise DataError(
            f"--human-review: {missing[0]} not found; give a run folder evaluated with eval.base: true, "
            "or --data FILE to generate the answers now"
        )
    base, finetuned = ([json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()] for f in files)
    print_review_sheet(base, finetuned, sheet)


def print_review_sheet(base: list[dict], finetuned: list[dict], sheet: Path) -> None:
    paths = write_review_sheet(base, finetuned, sheet)
    print(
        f"review sheet: {paths['sheet']} ({len(base)} rows; fill 'preference' with A, B or tie)\n"
        f"key (keep it away from reviewers): {paths['key']}\n"
        f"then: lmtune eval --score-review {paths['sheet']}"
    )


def print_review_scores(sheet: Path) -> None:
    from lmtune.files import atomic_write_json

    s = score_review(sheet)
    print(
        f"fine-tuned vs base on {s['rated']} rated rows ({s['unrated']} not rated): "
        f"win {s['win_rate']:.1%}, tie {s['tie_rate']:.1%}, loss {s['loss_rate']:.1%} "
        f"({s['finetuned_wins']}/{s['ties']}/{s['base_wins']})"
    )
    out = sheet.with_name(sheet.stem + ".scores.json")
    atomic_write_json(out, s)
    print(f"written: {out}")
