"""Blind human review: the sheet hides the models, the key undoes it, the scores count right."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from lmtune.cli import main
from lmtune.errors import DataError
from lmtune.evaluate.review import key_path, score_review, write_review_sheet


def _predictions(n: int) -> tuple[list[dict], list[dict]]:
    base = [{"prompt": f"q{i}", "reference": f"r{i}", "prediction": f"base answer {i}"} for i in range(n)]
    tuned = [{"prompt": f"q{i}", "reference": f"r{i}", "prediction": f"tuned answer {i}"} for i in range(n)]
    return base, tuned


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _fill(sheet: Path, choose) -> None:
    rows = _read(sheet)
    for row in rows:
        row["preference"] = choose(row)
    with sheet.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_sheet_is_blind_and_shuffled_and_the_key_undoes_it(tmp_path):
    base, tuned = _predictions(20)
    paths = write_review_sheet(base, tuned, tmp_path / "review.csv", seed=3)
    sheet, key = _read(paths["sheet"]), {r["id"]: r for r in _read(paths["key"])}
    text = paths["sheet"].read_text()
    assert "finetuned" not in text and "base," not in text  # nothing names the models
    assert [r["prompt"] for r in sheet] != [b["prompt"] for b in base]  # rows shuffled
    sides = [key[r["id"]]["a"] for r in sheet]
    assert 0 < sides.count("finetuned") < 20  # sides drawn per row
    for row in sheet:  # the key tells which answer is whose
        a_is_tuned = key[row["id"]]["a"] == "finetuned"
        assert row["answer_a"].startswith("tuned" if a_is_tuned else "base")
        assert row["answer_b"].startswith("base" if a_is_tuned else "tuned")


def test_scores_count_wins_ties_losses_and_unrated_rows(tmp_path):
    base, tuned = _predictions(10)
    paths = write_review_sheet(base, tuned, tmp_path / "review.csv")

    def prefer_tuned_except_three(row: dict) -> str:
        i = int(row["prompt"][1:])
        if i in (0, 1):
            return "tie"
        if i == 2:
            return ""  # not rated yet
        if i == 3:  # the reviewer liked the base answer here
            return "A" if row["answer_a"].startswith("base") else "b"
        return "a" if row["answer_a"].startswith("tuned") else "B"

    _fill(paths["sheet"], prefer_tuned_except_three)
    s = score_review(paths["sheet"])
    assert (s["finetuned_wins"], s["ties"], s["base_wins"], s["unrated"]) == (6, 2, 1, 1)
    assert s["win_rate"] == pytest.approx(6 / 9) and s["loss_rate"] == pytest.approx(1 / 9)


def test_an_existing_sheet_is_never_overwritten(tmp_path):
    base, tuned = _predictions(3)
    sheet = tmp_path / "review.csv"
    sheet.write_text("my filled-in work")
    with pytest.raises(DataError, match="never overwritten"):
        write_review_sheet(base, tuned, sheet)
    assert sheet.read_text() == "my filled-in work" and not key_path(sheet).exists()


def test_bad_preference_names_the_line(tmp_path, capsys):
    base, tuned = _predictions(3)
    paths = write_review_sheet(base, tuned, tmp_path / "review.csv")
    _fill(paths["sheet"], lambda row: "maybe" if row["id"] == "2" else "a")
    assert main(["eval", "--score-review", str(paths["sheet"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lmtune: error: {paths['sheet']}:3: preference: expected A, B or tie, found 'maybe'")


def test_cli_sheet_from_a_run_folder_and_scores(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    base, tuned = _predictions(4)
    write_jsonl(run / "predictions_base.jsonl", base)
    write_jsonl(run / "predictions_finetuned.jsonl", tuned)
    sheet = tmp_path / "review.csv"
    assert main(["eval", "--model", str(run), "--human-review", str(sheet)]) == 0
    _fill(sheet, lambda row: "a" if row["answer_a"].startswith("tuned") else "b")
    assert main(["eval", "--score-review", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "win 100.0%, tie 0.0%, loss 0.0% (4/0/0)" in out
    assert json.loads((tmp_path / "review.scores.json").read_text())["finetuned_wins"] == 4


def test_cli_sheet_needs_both_prediction_files(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path), "--human-review", str(tmp_path / "r.csv")]) == 2
    assert "predictions_base.jsonl not found" in capsys.readouterr().err


def test_cli_sheet_with_data_generates_both_models_answers(tmp_path, tiny_llama_dir, tiny_gpt2_dir, task_files):
    sheet = tmp_path / "review.csv"
    argv = ["eval", "--model", str(tiny_llama_dir), "--baseline", str(tiny_gpt2_dir), "--data", str(task_files[1])]
    argv += ["--metrics", "bleu", "--max-new-tokens", "4", "--human-review", str(sheet)]
    assert main(argv) == 0
    rows, key = _read(sheet), _read(key_path(sheet))
    assert sorted(r["prompt"] for r in rows) == sorted(
        f"Add {p}." for p in ("5 and 1", "2 and 7", "6 and 6", "8 and 0", "3 and 9")
    )
    assert {k["a"] for k in key} | {k["b"] for k in key} == {"base", "finetuned"}
