"""``lmtune export --overwrite`` replaces an earlier export's own files and never anything else in the folder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.errors import ExportError
from lmtune.shipping.export import export
from lmtune.shipping.output import EXPORT_RECORD, foreign_files, put_in_place


def quiet(*_: object) -> None:
    pass


def contents(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` with a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def earlier_export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF export of the tiny LoRA run, made once; tests copy it (do not write into it)."""
    out = tmp_path_factory.mktemp("earlier") / "hf"
    export(lora_run, out, echo=quiet)
    return out


def copy_of(export_dir: Path, where: Path) -> Path:
    import shutil

    return Path(shutil.copytree(export_dir, where / "out"))


def test_export_json_lists_every_file_the_export_wrote(earlier_export: Path) -> None:
    record = json.loads((earlier_export / EXPORT_RECORD).read_text())
    assert record["files"] == sorted(p.name for p in earlier_export.iterdir())
    assert {"model.safetensors", "README.md", EXPORT_RECORD} <= set(record["files"])


def test_overwrite_refuses_a_folder_with_a_file_of_the_users(
    lora_run: Path, earlier_export: Path, tmp_path: Path
) -> None:
    out = copy_of(earlier_export, tmp_path)
    (out / "notes.txt").write_text("my notes", encoding="utf-8")
    before = contents(out)
    with pytest.raises(ExportError, match="notes.txt") as refused:
        export(lora_run, out, overwrite=True, echo=quiet)
    assert "\n" not in str(refused.value) and "move it out" in str(refused.value)
    assert contents(out) == before  # the notes and the earlier export, byte for byte
    (out / "notes.txt").unlink()
    export(lora_run, out, overwrite=True, echo=quiet)  # the folder holds only the export now: replaced
    assert json.loads((out / EXPORT_RECORD).read_text())["files"] == sorted(p.name for p in out.iterdir())


def test_the_command_refuses_before_loading_and_keeps_the_notes(
    lora_run: Path, earlier_export: Path, tmp_path: Path
) -> None:
    """The user's report: a q4_0 export over an earlier one with --overwrite deleted their notes file."""
    out = copy_of(earlier_export, tmp_path)
    (out / "notes.txt").write_text("my notes", encoding="utf-8")
    args = ["export", str(lora_run), "--output", str(out), "--format", "gguf", "--quant", "q4_0", "--overwrite"]
    done = subprocess.run([sys.executable, "-m", "lmtune", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lmtune: error: --output {out}: holds notes.txt"), done.stderr
    assert "loading" not in done.stdout  # refused before any model was loaded
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes"


def test_a_folder_that_is_no_export_is_refused_with_the_first_foreign_file(lora_run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("b.txt", "a.txt"):
        (mine / name).write_text("keep me", encoding="utf-8")
    with pytest.raises(ExportError, match=r"holds a\.txt, and is not an lmtune export"):
        export(lora_run, mine, overwrite=True, echo=quiet)
    assert sorted(p.name for p in mine.iterdir()) == ["a.txt", "b.txt"]


def test_an_interrupted_overwrite_leaves_the_earlier_export_as_it_was(
    lora_run: Path, earlier_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmtune.shipping.export as export_module

    out = copy_of(earlier_export, tmp_path)
    before = contents(out)

    def interrupted(*_: object, **__: object) -> str:
        raise KeyboardInterrupt  # Ctrl-C after the new weights were written and checked

    monkeypatch.setattr(export_module, "model_card", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(lora_run, out, overwrite=True, echo=quiet)
    assert contents(out) == before
    assert not list(tmp_path.glob(".tmp*"))


def test_an_export_json_from_an_older_lmtune_counts_the_files_exports_write(tmp_path: Path) -> None:
    """Records written before the file list: the names an lmtune export can write are the export's."""
    older = tmp_path / "older"
    older.mkdir()
    record = {"format": "gguf", "quant": "q8_0", "file": "run-q8_0.gguf"}
    (older / EXPORT_RECORD).write_text(json.dumps(record), encoding="utf-8")
    for name in ("run-q8_0.gguf", "Modelfile", "README.md", "notes.txt", "other.gguf"):
        (older / name).write_text("x", encoding="utf-8")
    assert foreign_files(older) == ["notes.txt", "other.gguf"]
    (older / EXPORT_RECORD).write_text(json.dumps({"format": "hf", "quant": None}), encoding="utf-8")
    for name in ("model-00001-of-00002.safetensors", "tokenizer.json", "chat_template.jinja", "config.json"):
        (older / name).write_text("x", encoding="utf-8")
    assert foreign_files(older) == ["notes.txt", "other.gguf", "run-q8_0.gguf"]


def test_a_file_added_while_the_folders_are_swapped_is_moved_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmtune.shipping.output as output_module

    out, staging = tmp_path / "out", tmp_path / ".tmp-export-x"
    for folder, weights in ((out, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "model.safetensors").write_text(weights, encoding="utf-8")
        (folder / EXPORT_RECORD).write_text(json.dumps({"files": ["model.safetensors", EXPORT_RECORD]}))
    (out / "late.txt").write_text("saved just before the swap", encoding="utf-8")
    monkeypatch.setattr(output_module, "refuse_foreign_files", lambda _folder: None)  # it arrived after the check
    put_in_place(staging, out)
    assert (out / "model.safetensors").read_text(encoding="utf-8") == "new"
    assert (out / "late.txt").read_text(encoding="utf-8") == "saved just before the swap"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
