"""The folder ``lmtune export --output DIR`` writes: only an earlier export's own files are ever replaced.

Each export lists the files it wrote in ``export.json`` (``files``).  ``--overwrite`` replaces
exactly those; a folder that holds anything else is refused before any model is loaded, and
checked again just before the new export goes in, since the export takes a while.  The new
export is swapped in whole (two renames of sibling folders), so the folder holds the old
export or the new one, never a mix, and a failed export leaves the old one as it was.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from lmtune.errors import ExportError

logger = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"
# Exports written before export.json listed its files: everything those lmtune versions could
# write (an HF folder with its tokenizer files, the model card, export.json, a GGUF export's
# Modelfile; the GGUF file itself is named in the record's "file").  Anything else is the user's.
OLDER_EXPORT_FILES = (
    EXPORT_RECORD, "README.md", "Modelfile", "config.json", "generation_config.json", "model.safetensors",
    "model-*-of-*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json",
    "merges.txt", "tokenizer.model",
)  # fmt: skip


def check_output(output: Path, source: Path, overwrite: bool) -> None:
    """``--output`` must be new, empty, or (with ``--overwrite``) an earlier export and nothing else."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output}: is a file, not a folder")
    if output.resolve() == source.resolve():
        raise ExportError(f"--output {output}: is the run folder itself; choose another folder")
    if not output.exists() or not any(output.iterdir()):
        return
    if not (output / EXPORT_RECORD).is_file():
        first = sorted(p.name for p in output.iterdir())[0]
        raise ExportError(
            f"--output {output}: holds {first}, and is not an lmtune export (no {EXPORT_RECORD}); "
            "choose a new or empty folder"
        )
    refuse_foreign_files(output)
    if not overwrite:
        raise ExportError(f"--output {output}: holds an earlier export; pass --overwrite to replace it")


def refuse_foreign_files(output: Path) -> None:
    if foreign := foreign_files(output):
        raise ExportError(
            f"--output {output}: holds {foreign[0]}, which the earlier export there did not write; "
            "--overwrite replaces only an export's own files: move it out of the folder, or choose another --output"
        )


def foreign_files(folder: Path) -> list[str]:
    """Names in ``folder`` that are not among the files of the export recorded there, sorted."""
    own = export_files(folder)
    return sorted(p.name for p in folder.iterdir() if not _listed(p.name, own))


def export_files(folder: Path) -> list[str]:
    """The files the export in ``folder`` wrote: its record's list (names or, for older records, patterns)."""
    try:
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    if isinstance(record.get("files"), list):
        return [str(name) for name in record["files"]]
    return [*OLDER_EXPORT_FILES, *([str(record["file"])] if record.get("file") else [])]


def _listed(name: str, own: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in own)


def put_in_place(staging: Path, output: Path) -> None:
    """Make the checked export in ``staging`` the folder ``output``; an earlier export there goes only after that.

    Files that turned up in ``output`` while the export ran are refused (checked here again), and
    any that arrive between that check and the swap are moved back into the new export's folder.
    """
    if not output.exists():
        os.replace(staging, output)
        return
    if any(output.iterdir()):
        refuse_foreign_files(output)
    trash = Path(tempfile.mkdtemp(prefix=".tmp-old-export-", dir=output.parent))
    old = trash / "export"
    os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError:
        os.replace(old, output)  # the earlier export stays where it was
        raise
    if _move_back_foreign_files(old, output):
        shutil.rmtree(trash, ignore_errors=True)


def _move_back_foreign_files(old: Path, output: Path) -> bool:
    """Move what is not the old export's own out of its folder into ``output``; False if something stayed."""
    # A folder that was empty when checked has no record: anything in it now is someone else's.
    foreign = foreign_files(old) if (old / EXPORT_RECORD).is_file() else sorted(p.name for p in old.iterdir())
    for name in foreign:
        if (output / name).exists():
            logger.warning("%s was added to the export folder while exporting; it is kept in %s", name, old)
            return False
        os.replace(old / name, output / name)
    return True
