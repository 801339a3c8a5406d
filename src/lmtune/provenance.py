"""What a run was made from: config, data files, model weights, package versions, git commit.

``run_record.json`` in the run folder holds it.  It makes a run reproducible (the same
record and seed give the same metrics on the same machine) and lets a resumed run
check that nothing it depends on changed since it started.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from lmtune.config import EMBEDDED_MODEL, RunConfig
from lmtune.data.cache import data_digests, file_digest

RECORD = "run_record.json"
PACKAGES = ("lmtune", "torch", "transformers", "peft", "accelerate", "trl", "datasets", "sacrebleu", "rouge-score")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")
HASH_LIMIT_BYTES = 8 << 30  # past this, weights are identified by size and mtime: hashing costs ~2 s per GB
COMPARED = ("config", "data", "model")  # what a resume must find unchanged


def run_record(cfg: RunConfig, world_size: int = 1) -> dict[str, Any]:
    """The record of a run about to start (before any model is loaded), in ``world_size`` processes."""
    config = cfg.model_dump(mode="json")
    return {
        "lmtune_run_record": 1,
        "world_size": world_size,
        "config": config,
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "data": data_digests(cfg.data),
        "model": model_identity(cfg.model.name),
        "seed": cfg.seed,
        "versions": versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_state(Path.cwd()),
    }


def model_identity(name: str) -> dict[str, Any]:
    """The weights behind ``model.name``: file hashes for local files, the name for hub ids.

    Transformers records the hub revision it loaded on ``model.config._commit_hash``;
    the pipeline adds it (and the tokenizer's digest) once the model is loaded.
    """
    from lmtune.models import embedded_gguf

    if name == EMBEDDED_MODEL:
        return {"name": name, "files": _digests([embedded_gguf()])}
    path = Path(name).expanduser()
    if path.is_file():
        return {"name": name, "files": _digests([path])}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name.endswith("config.json"))
        return {"name": name, "files": _digests(files)}
    return {"name": name, "hub": True}


def _digests(files: list[Path]) -> dict[str, str]:
    total = sum(f.stat().st_size for f in files)
    if total > HASH_LIMIT_BYTES:
        return {f.name: f"size {f.stat().st_size}, mtime {f.stat().st_mtime_ns}" for f in files}
    return {f.name: "sha256:" + file_digest(f) for f in files}


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences between two records in what a run depends on, one readable item each."""
    differences = _differences(old.get("config", {}), new["config"])
    if _same_global_batch(old, new):  # another process count with the per-device batch to match: the same run
        differences = [d for d in differences if d[0] != "training.per_device_train_batch_size"]
    changes = [f"{key}: {a!r} -> {b!r}" for key, a, b in differences]
    old_data, new_data = old.get("data", {}), new["data"]
    for file in sorted(set(old_data) | set(new_data)):
        if file not in new_data:
            changes.append(f"data file {file} is no longer read")
        elif file not in old_data:
            changes.append(f"data file {file} is new")
        elif old_data[file] != new_data[file]:
            changes.append(f"data file {file} changed")
    if old.get("model", {}).get("files") != new["model"].get("files"):
        changes.append(f"the weights of model {new['model']['name']} changed")
    return changes


def _same_global_batch(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def global_batch(record: dict[str, Any]) -> Any:
        batch = record.get("config", {}).get("training", {}).get("per_device_train_batch_size")
        return batch * record.get("world_size", 1) if isinstance(batch, int) else batch

    return global_batch(old) == global_batch(new)


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            found += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if a == b else [(prefix, a, b)]


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit of the git work tree the user runs in (and whether it has uncommitted changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None  # not a git work tree, or no git
