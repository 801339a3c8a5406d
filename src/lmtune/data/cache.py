"""Tokenised data cached by fingerprint: (data files' content, tokenizer, data section, seed).

A second run on the same data with the same tokenizer and settings loads the
token arrays instead of tokenising again; a change in any input gives a new
fingerprint.  Hub datasets are not cached here (``datasets`` keeps its own cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from lmtune import __version__
from lmtune.config import DataConfig
from lmtune.data.encode import Encoder
from lmtune.data.formats import FILE_SUFFIXES
from lmtune.data.prepare import TaskData, Tokenized, tokenize_task_data
from lmtune.models import cache_root

CHUNK = 1 << 20


def cache_dir() -> Path:
    return cache_root() / "datasets"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


HUB_DATASET = "hub dataset"


def data_digests(cfg: DataConfig) -> dict[str, str]:
    """``{file: "sha256:..."}`` for every local file the data section reads; hub datasets by name."""
    digests = {}
    for which in ("train", "eval"):
        for src in cfg.sources(which):
            path = Path(src.path)
            if path.is_file():
                digests[str(path)] = "sha256:" + file_digest(path)
            elif path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
                digests.update({str(p): "sha256:" + file_digest(p) for p in files})
            else:
                digests[src.path] = f"{HUB_DATASET} (split {src.split}, subset {src.subset})"
    return digests


def _source_digests(cfg: DataConfig) -> list[str] | None:
    digests = data_digests(cfg)
    if any(d.startswith(HUB_DATASET) for d in digests.values()):
        return None  # a hub dataset: no content hash to key on
    return list(digests.values())  # content only: the same file moved elsewhere still hits the cache


def tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = [
        vocab,
        str(tokenizer.chat_template),
        str(tokenizer.eos_token),
        str(tokenizer.pad_token),
        str(tokenizer.bos_token),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


# Bumped whenever the tokenised rows change for the same inputs (2: long held-out text is kept;
# 3: a held-out row per reference, rows sharing a prompt grouped; 4: long held-out prompt/answer rows are
# kept, cut from the middle of the prompt, whatever data.overlong says).
CACHE_LAYOUT = 4


def fingerprint(cfg: DataConfig, seed: int, encoder: Encoder) -> str | None:
    digests = _source_digests(cfg)
    if digests is None:
        return None
    key = {
        "lmtune": __version__,
        "layout": CACHE_LAYOUT,
        "files": digests,
        "data": cfg.model_dump(mode="json"),
        "seed": seed,
        "tokenizer": tokenizer_digest(encoder.tokenizer),
        "template": encoder.template,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def tokenize_cached(encoder: Encoder, data: TaskData, cfg: DataConfig, seed: int) -> tuple[Tokenized, bool]:
    """(tokenised data, whether it came from the cache)."""
    key = fingerprint(cfg, seed, encoder) if cfg.cache else None
    path = cache_dir() / f"{key}.pkl" if key else None
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                stored = pickle.load(f)  # our own file, written below
            data.report.update(stored["report"])
            eval_examples = [data.eval[i] for i in stored["eval_index"]]
            return Tokenized(stored["train"], stored["eval"], eval_examples, stored["eval_owner"]), True
        except (OSError, pickle.UnpicklingError, KeyError, IndexError, EOFError):
            pass  # a damaged entry is rebuilt
    tokenized = tokenize_task_data(encoder, data, cfg.overlong)
    if path is not None:
        ids = {id(ex): i for i, ex in enumerate(data.eval)}
        stored = {
            "train": tokenized.train,
            "eval": tokenized.eval,
            "eval_index": [ids[id(ex)] for ex in tokenized.eval_examples],
            "eval_owner": tokenized.eval_owner,
            "report": {k: data.report[k] for k in ("overlong", "tokens", "warnings")},
        }
        _write_atomic(path, stored)
    return tokenized, False


def _write_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
