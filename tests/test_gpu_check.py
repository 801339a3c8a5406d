"""bench/gpu/check.py, the GPU check, in its CPU dry run: every stage that does not need CUDA runs and measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT

CUDA_ONLY = {"qlora", "fsdp2_lora", "tests"}
MEASURED = {"trl_padding", "trl_packing", "lmtune_lora", "full"}  # these report real tokens per second


def test_the_gpu_check_dry_run_runs_every_stage_that_needs_no_cuda(tmp_path: Path) -> None:
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu" / "check.py"), "--dry-run", "--output",
                           str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["seed", "trl_padding", "trl_packing", "lmtune_lora", "qlora", "full", "dpo",
                            "fsdp2_lora", "serve", "tests"]  # fmt: skip
    for name in CUDA_ONLY:
        assert stages[name] == {"status": "skipped", "reason": "needs CUDA"}
    seed_here = (REPO_ROOT.parent / "shared" / "bench" / "seed_recipe.py").is_file()
    assert stages["seed"]["status"] == ("ok" if seed_here else "skipped"), stages["seed"]
    for name in MEASURED | ({"seed"} if seed_here else set()):
        assert stages[name]["status"] == "ok" and stages[name]["tok_s"] > 0 and stages[name]["train_s"] > 0, name
    assert stages["dpo"]["status"] == "ok"
    assert stages["serve"]["status"] == "ok" and stages["serve"]["completion_tokens"] > 0
    table = (out / "results.md").read_text()
    assert table.startswith("DRY RUN (CPU, tiny models)") and all(f"| {name} |" in table for name in stages)
    assert "lmtune LoRA / trl_packing: tokens/s" in table
    assert {p.name for p in (out / "logs").iterdir()} >= {f"{name}.log" for name in MEASURED | {"dpo", "serve"}}
