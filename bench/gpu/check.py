#!/usr/bin/env python3
"""lmtune's GPU check: one script, stage by stage, each with its own time limit and log.

On a GPU machine (``bench/gpu/run.sh`` there, after ``bench/gpu/prepare.sh`` here) it measures, on models
of real shapes with random weights (speed and memory do not depend on the weights' values):

- LoRA on the SmolLM2-1.7B shape, the same E2E rows and LoRA (r16, all linear layers, batch 16, one epoch):
  the seed recipe (float32, padded to max_length), TRL ``SFTTrainer`` (bf16, SDPA; dynamic padding, and
  packing) and ``lmtune train`` with its defaults: real tokens/s and peak CUDA memory of each process;
- QLoRA (bitsandbytes NF4) with lmtune: its peak memory against LoRA's;
- full fine-tuning and one DPO run with lmtune on the 135M shape;
- the FSDP2 LoRA config (``configs/distributed/fsdp2-lora.yaml``) under ``--nproc 1``;
- ``lmtune serve`` answering one chat request on the GPU;
- the fast test suite with CUDA visible.

``--dry-run`` runs the same stages on CPU with tiny random models and skips what needs CUDA (QLoRA, FSDP2,
the test suite); ``tests/test_gpu_check.py`` runs it, so the script keeps working between GPU sessions.

    python bench/gpu/check.py --output DIR [--dry-run] [--budget-s 480]

Writes DIR/results.json, DIR/results.md and DIR/logs/STAGE.log; exits 1 when a stage that ran failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from inputs import DRY, ROOT, Sizes, make_models, seed_recipe, write_data  # bench/gpu/: the script's folder

HERE = Path(__file__).resolve().parent
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
PEAK = "GPU_PEAK "


@dataclass
class Check:
    out: Path
    work: Path
    sizes: Sizes
    deadline: float

    def left(self) -> float:
        return self.deadline - time.time()


# --------------------------------------------------------------------------- stages


def run(check: Check, name: str, cmd: list[str], timeout: float) -> str:
    """One command with its time limit; its output in logs/NAME.log; the output, or RuntimeError."""
    log = check.out / "logs" / f"{name}.log"
    limit = max(min(timeout, check.left()), 1)
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        log.write_text(f"$ {' '.join(cmd)}\n{e.stdout or ''}\n{e.stderr or ''}\n(timed out after {limit:.0f} s)\n")
        raise RuntimeError(f"timed out after {limit:.0f} s") from None
    log.write_text(f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    if done.returncode:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"exit status {done.returncode}: {last[:300]}")
    return done.stdout


def gpu_peak(stdout: str) -> dict[str, Any]:
    line = next((x for x in stdout.splitlines() if x.startswith(PEAK)), None)
    return json.loads(line[len(PEAK) :]) if line else {}


def peak(*args: str) -> list[str]:
    """``python peak.py ...``: the command, with the process's peak CUDA memory printed at its exit."""
    return [sys.executable, str(HERE / "peak.py"), *args]


def lmtune_config(check: Check, name: str, model: str, files: dict[str, Path], **over: Any) -> Path:
    s = check.sizes
    raw: dict[str, Any] = {
        "seed": 42,
        "model": {"name": str(check.work / model)},
        "method": "lora",
        "lora": dict(LORA),
        "data": {"train": str(files["train"]), "eval": str(files["eval"]), "max_length": s.max_length},
        "training": {
            "output_dir": str(check.work / "runs" / name),
            "per_device_train_batch_size": s.batch,
            "num_train_epochs": 1,
            "learning_rate": 2e-4,
            "save_strategy": "no",
            "report_to": "none",
            "logging_steps": 10,
        },  # fmt: skip
        "eval": {"base": False, "metrics": ["perplexity"], "reference": None, "safety": False},  # speed, not safety
    }
    for section, values in over.items():
        if values is None:
            raw.pop(section, None)
        elif isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    path = check.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def lmtune_run(check: Check, name: str, config: Path, timeout: float, *extra: str) -> dict[str, Any]:
    stdout = run(check, name, peak("-m", "lmtune", "train", str(config), "--overwrite", *extra), timeout)
    metrics = json.loads((check.work / "runs" / name / "metrics.json").read_text())
    tokens = metrics["run"].get("train_tokens_per_epoch")
    seconds = metrics["train_time_s"]
    speed = round(tokens / seconds, 1) if tokens else None  # preference runs do not count tokens
    return {"train_s": round(seconds, 2), "real_tokens": tokens, "tok_s": speed, "dtype": metrics["run"].get("dtype"),
            **gpu_peak(stdout)}  # fmt: skip


def seed_stage(check: Check, files: dict[str, Path]) -> dict[str, Any]:
    s = check.sizes
    recipe = seed_recipe()
    if recipe is None:
        return {"status": "skipped", "reason": "the seed recipe (../shared/bench/seed_recipe.py) is not here"}
    cmd = peak(str(recipe), "--model", str(check.work / "big"), "--method", "lora", "--train",
               str(files["train"]), "--eval", str(files["eval"]), "--max-length", str(s.max_length), "--batch",
               str(s.batch), "--epochs", "1", "--lr", "2e-4", "--lora-r", "16", "--lora-alpha", "32",
               "--lora-targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")  # fmt: skip
    stdout = run(check, "seed", cmd, 240)
    r = json.loads(next(x for x in reversed(stdout.splitlines()) if x.startswith("{")))
    return {"train_s": round(r["train_s"], 2), "real_tokens": r["real_tokens"],
            "tok_s": round(r["real_tokens"] / r["train_s"], 1), "dtype": "float32", **gpu_peak(stdout)}  # fmt: skip


def trl_stage(check: Check, files: dict[str, Path], packing: bool) -> dict[str, Any]:
    s = check.sizes
    cmd = [sys.executable, str(ROOT / "bench" / "trl_peer.py"), "--model", str(check.work / "big"),
           "--train", str(files["train"]), "--max-length", str(s.max_length), "--batch", str(s.batch),
           "--lora-targets", "all-linear", *(["--packing"] if packing else [])]  # fmt: skip
    stdout = run(check, "trl_packing" if packing else "trl_padding", cmd, 180)
    r = json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    return {"train_s": r["train_s"], "real_tokens": r["real_tokens"], "tok_s": r["tok_s"],
            "dtype": "bfloat16 autocast" if r["bf16"] else "float32",
            **({"alloc_gib": r["peak_gpu_gib"]} if "peak_gpu_gib" in r else {})}  # fmt: skip


def serve_stage(check: Check) -> dict[str, Any]:
    """``lmtune serve`` on the full fine-tuning run; one chat request over HTTP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (check.out / "logs" / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "lmtune", "serve", str(check.work / "runs" / "full"),
                               "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + min(180, check.left())
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server stopped with exit status {server.returncode}")
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("the server did not answer /v1/models in time") from None
                time.sleep(0.5)
        body = {"model": "full", "messages": [{"role": "user", "content": "name[Alimentum], area[city centre]"}],
                "max_tokens": 16, "temperature": 0}  # fmt: skip
        request = urllib.request.Request(f"{base}/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        took = time.perf_counter() - start
        usage = answer.get("usage", {})
        if not answer["choices"][0]["message"]["content"] and not usage.get("completion_tokens"):
            raise RuntimeError("an empty answer")
        return {"request_s": round(took, 2), "completion_tokens": usage.get("completion_tokens")}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def tests_stage(check: Check) -> dict[str, Any]:
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-x", "-p", "no:cacheprovider"]
    stdout = run(check, "tests", pytest, max(check.left() - 5, 1))
    return {"summary": stdout.strip().splitlines()[-1] if stdout.strip() else ""}


def stages(check: Check, files: dict[str, Path]) -> list[tuple[str, bool, Callable[[], dict[str, Any]]]]:
    """(name, needs CUDA, measure) in the order they run."""
    fsdp = ROOT / "configs" / "distributed" / "fsdp2-lora.yaml"
    return [
        ("seed", False, lambda: seed_stage(check, files)),
        ("trl_padding", False, lambda: trl_stage(check, files, packing=False)),
        ("trl_packing", False, lambda: trl_stage(check, files, packing=True)),
        ("lmtune_lora", False, lambda: lmtune_run(check, "lmtune_lora",
                                                  lmtune_config(check, "lmtune_lora", "big", files), 240)),
        ("qlora", True, lambda: lmtune_run(check, "qlora", lmtune_config(check, "qlora", "big", files,
                                                                         method="qlora"), 240)),
        ("full", False, lambda: lmtune_run(check, "full", lmtune_config(check, "full", "small", files, method="full",
                                                                        lora=None), 180)),
        ("dpo", False, lambda: lmtune_run(check, "dpo", lmtune_config(
            check, "dpo", "small", files, objective="dpo",
            data={"train": str(files["pairs"]), "eval": str(files["pairs_eval"])}), 180)),
        ("fsdp2_lora", True, lambda: lmtune_run(check, "fsdp2_lora", fsdp, 180, "--nproc", "1",
                                                "--set", f"model.name={check.work / 'big'}",
                                                "--set", f"data.train={files['train']}",
                                                "--set", f"data.eval={files['eval']}",
                                                "--set", f"training.output_dir={check.work / 'runs' / 'fsdp2_lora'}")),
        ("serve", False, lambda: serve_stage(check)),
        ("tests", True, lambda: tests_stage(check)),
    ]  # fmt: skip


# --------------------------------------------------------------------------- report


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0)
        where = f"{gpu.name} ({gpu.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        where = f"no GPU, {os.cpu_count()} CPU cores"
    return f"{where}; torch {torch.__version__}, Python {platform.python_version()}"


def markdown(report: dict[str, Any]) -> str:
    r = report["stages"]
    lines = [f"{'DRY RUN (CPU, tiny models): ' if report['dry_run'] else ''}{report['machine']}; {report['date']}; "
             f"{report['task']} rows", "", "| stage | status | real tok/s | peak GPU GiB | train s | notes |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, x in r.items():
        note = x.get("error") or x.get("reason") or x.get("dtype") or x.get("summary") or \
            (f"{x['request_s']} s, {x.get('completion_tokens')} tokens" if "request_s" in x else "")  # fmt: skip
        lines.append(f"| {name} | {x['status']} | {x.get('tok_s') or ''} | {x.get('alloc_gib', '')} | "
                     f"{x.get('train_s', '')} | {note} |")  # fmt: skip
    ours = r.get("lmtune_lora", {})
    for peer in ("seed", "trl_padding", "trl_packing"):
        theirs = r.get(peer, {})
        if ours.get("tok_s") and theirs.get("tok_s"):
            mem = (f", peak memory {ours['alloc_gib'] / theirs['alloc_gib']:.2f}x"
                   if ours.get("alloc_gib") and theirs.get("alloc_gib") else "")  # fmt: skip
            lines.append(f"\nlmtune LoRA / {peer}: tokens/s {ours['tok_s'] / theirs['tok_s']:.2f}x{mem}")
    q = r.get("qlora", {})
    if q.get("alloc_gib") and ours.get("alloc_gib"):
        lines.append(f"\nQLoRA peak memory / LoRA: {q['alloc_gib'] / ours['alloc_gib']:.2f}x")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="results.json, results.md and logs/ go here")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models; skip what needs CUDA")
    p.add_argument("--budget-s", type=float, default=480, help="the whole check ends within this")
    p.add_argument("--only", default=None, help="comma list of stages (models and data are always made)")
    a = p.parse_args(argv)

    import torch

    out = Path(a.output)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        print("check.py: no CUDA device here; use --dry-run on CPU", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lmtune_gpu_check_"))
    check = Check(out, work, DRY if a.dry_run else Sizes(), time.time() + a.budget_s)
    report: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "dry_run": a.dry_run, "sizes": vars(check.sizes), "stages": {}}  # fmt: skip
    if a.dry_run:  # the stages' processes too: a CPU run even where a GPU is present
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        start = time.time()
        report["task"], files = write_data(check.sizes, work)
        report["models"] = make_models(check.sizes, work)
        report["setup_s"] = round(time.time() - start, 1)
        wanted = set(a.only.split(",")) if a.only else None
        for name, needs_cuda, measure in stages(check, files):
            if wanted is not None and name not in wanted:
                continue
            if needs_cuda and not cuda:
                report["stages"][name] = {"status": "skipped", "reason": "needs CUDA"}
                continue
            if check.left() < 5:
                report["stages"][name] = {"status": "skipped", "reason": "out of time"}
                continue
            print(f"[{name}] ...", flush=True)
            begun = time.time()
            try:
                report["stages"][name] = {"status": "ok", **measure()}  # a measure may say "skipped"
            except Exception as e:  # noqa: BLE001 - a failed stage is recorded and the check goes on
                report["stages"][name] = {"status": "FAILED", "error": f"{type(e).__name__}: {e}"[:400]}
            report["stages"][name]["wall_s"] = round(time.time() - begun, 1)
            print(f"[{name}] {report['stages'][name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / "results.md").write_text(table)
    print(table)
    return 1 if any(x["status"] == "FAILED" for x in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
