"""Several processes under torchrun (gloo on CPU): the same run as one process, resumable, checked before it starts.

The runs use the tiny random Llama in float32 with dropout 0, so one process with batch 8 and two with
batch 4 see the same examples per step and must agree to rounding: the gradients of the two halves are
averaged by DDP's all-reduce, where one process sums them in one backward.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import lmtune, losses, tiny_run_raw

from lmtune.build import SHARDED_ON_CPU, check_device
from lmtune.config import load_config
from lmtune.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "distributed"
LOSS_TOLERANCE = 5e-3
WEIGHT_TOLERANCE = 1e-4  # Transformers' own distributed tests compare weights to this tolerance


def write_config(tmp_path: Path, tiny_llama_dir: Path, task_files: Any, name: str, batch: int, **training: Any) -> Path:
    raw = tiny_run_raw(tiny_llama_dir, *task_files, tmp_path / name)
    raw["training"].update({"max_steps": -1, "num_train_epochs": 3, "per_device_train_batch_size": batch,
                            "report_to": "none", **training})  # fmt: skip
    raw["eval"].update(base=False, metrics=["perplexity"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def adapter(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "adapter_model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = adapter(a), adapter(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() < WEIGHT_TOLERANCE, key


def files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and "runs/" not in p.as_posix()}


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, tiny_llama_dir, tokenizer) -> tuple[Path, Path, str]:
    """A one-process run with batch 8 and a two-process run with batch 4, on the same data."""
    from helpers import EVAL_ROWS, TRAIN_ROWS, write_jsonl

    tmp = tmp_path_factory.mktemp("ddp")
    task = (write_jsonl(tmp / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp / "eval.jsonl", EVAL_ROWS))
    single = lmtune("train", str(write_config(tmp, tiny_llama_dir, task, "one", 8)))
    assert single.returncode == 0, single.stderr[-2000:]
    double = lmtune("train", str(write_config(tmp, tiny_llama_dir, task, "two", 4)), "--nproc", "2")
    assert double.returncode == 0, double.stderr[-2000:]
    return tmp / "one", tmp / "two", double.stdout


def test_two_processes_with_half_the_batch_train_as_one(one_and_two):
    one, two, _ = one_and_two
    run_one = json.loads((one / "metrics.json").read_text())["run"]
    run_two = json.loads((two / "metrics.json").read_text())["run"]
    assert (run_one["world_size"], run_two["world_size"]) == (1, 2)  # seen inside the run: two processes joined
    assert run_one["global_batch"] == run_two["global_batch"] == 8
    a, b = losses(one), losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) == 6  # 16 rows, 3 epochs, 8 per step
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=LOSS_TOLERANCE)
    assert_same_weights(one, two)
    ppl_one = json.loads((one / "metrics.json").read_text())["finetuned"]["perplexity"]
    ppl_two = json.loads((two / "metrics.json").read_text())["finetuned"]["perplexity"]
    assert ppl_two == pytest.approx(ppl_one, rel=1e-4)  # rank 0 evaluates as one process does


def test_both_run_folders_hold_the_same_files_and_rank_zero_alone_printed(one_and_two):
    one, two, stdout = one_and_two
    assert files(one) == files(two)
    assert stdout.count("run folder:") == 1  # one rank printed the run's lines


def kill_after_checkpoint(config: Path, run: Path) -> None:
    """Start a two-process run, SIGKILL the command as soon as a checkpoint is committed."""
    proc = subprocess.Popen([sys.executable, "-m", "lmtune", "train", str(config), "--nproc", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while not list(run.glob("checkpoint-*/lmtune_checkpoint.json")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before a checkpoint was committed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60  # the launcher and its workers follow the command down
    while workers_alive(str(config)) and time.time() < deadline:
        time.sleep(0.2)
    assert not workers_alive(str(config))
    assert not (run / "metrics.json").exists()


def workers_alive(config: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if config in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


KILLED = {"num_train_epochs": 20, "save_strategy": "steps", "save_steps": 4}  # 40 steps: time to kill it


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_llama_dir) -> tuple[Path, tuple[Path, Path]]:
    from helpers import EVAL_ROWS, TRAIN_ROWS, write_jsonl

    tmp = tmp_path_factory.mktemp("whole")
    task = (write_jsonl(tmp / "train.jsonl", TRAIN_ROWS), write_jsonl(tmp / "eval.jsonl", EVAL_ROWS))
    done = lmtune("train", str(write_config(tmp, tiny_llama_dir, task, "whole", 4, **KILLED)), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "whole", task


@pytest.mark.parametrize("resume_with", [2, 1])
def test_a_killed_two_process_run_resumes_with_two_or_one_process(tmp_path, tiny_llama_dir, uninterrupted, resume_with):
    whole, task = uninterrupted
    config = write_config(tmp_path, tiny_llama_dir, task, "killed", 4, **KILLED)
    kill_after_checkpoint(config, tmp_path / "killed")
    if resume_with == 1:  # the same global batch in one process
        raw = yaml.safe_load(config.read_text())
        raw["training"]["per_device_train_batch_size"] = 8
        config.write_text(yaml.safe_dump(raw))
    resumed = lmtune("train", str(config), *(["--nproc", "2"] if resume_with == 2 else []))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    assert_same_weights(whole, tmp_path / "killed")


def started_and_training(config: Path, run: Path) -> subprocess.Popen:
    """A two-process run that has logged a few steps."""
    # as from a terminal: a test run in the background (``make test &``) inherits SIGINT ignored, and
    # Python then never turns it into KeyboardInterrupt (as ``nohup lmtune train ... &`` should not)
    proc = subprocess.Popen([sys.executable, "-m", "lmtune", "train", str(config), "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    log = run / "train_log.jsonl"
    deadline = time.time() + 240
    while not log.is_file() or len(log.read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    return proc


def test_ctrl_c_stops_both_ranks_after_one_checkpoint_with_one_line(tmp_path, tiny_llama_dir, task_files):
    config = write_config(tmp_path, tiny_llama_dir, task_files, "run", 4, num_train_epochs=200, save_steps=1000,
                          save_strategy="steps")  # fmt: skip
    proc = started_and_training(config, tmp_path / "run")
    proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
    out, err = proc.communicate(timeout=120)
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert proc.returncode == 130, f"{len(log)} log lines\n{out[-1500:]}\n{err[-3000:]}"
    lines = [x for x in err.splitlines() if x.startswith("lmtune:")]
    assert len(lines) == 1 and lines[0].startswith("lmtune: error: interrupted: checkpoint-"), err[-2000:]
    (checkpoint,) = (tmp_path / "run").glob("checkpoint-*")
    assert (checkpoint / "lmtune_checkpoint.json").is_file() and checkpoint.name in lines[0]
    assert not workers_alive(str(config))


def test_a_rank_that_dies_stops_the_other_with_one_line(tmp_path, tiny_llama_dir, task_files):
    from lmtune.launch.torchrun import _children

    config = write_config(tmp_path, tiny_llama_dir, task_files, "run", 4, num_train_epochs=200)
    proc = started_and_training(config, tmp_path / "run")
    (agent,) = _children(proc.pid)
    workers = sorted(_children(agent))
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = [x for x in err.splitlines() if x.startswith("lmtune:")]
    assert len(lines) == 1 and "was stopped by SIGKILL; all ranks stopped" in lines[0], err[-2000:]
    assert not workers_alive(str(config))


def test_bad_data_under_two_processes_is_one_line_and_starts_nothing(tmp_path, tiny_llama_dir, task_files):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": \n')
    config = write_config(tmp_path, tiny_llama_dir, (bad, task_files[1]), "bad", 4)
    done = lmtune("train", str(config), "--nproc", "2", timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.startswith("lmtune: error: ") and "\n" not in err and f"{bad}:2" in err, err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", ["fsdp2-lora", "fsdp2-full", "zero2-lora", "zero3-full"])
def test_sharded_configs_parse_and_are_refused_on_cpu(name):
    import torch

    cfg = load_config(CONFIGS / f"{name}.yaml")
    extra = cfg.training.model_extra
    assert extra.get("fsdp") or extra.get("deepspeed")
    if name.startswith("fsdp"):
        assert extra["fsdp_config"]["version"] == 2
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the configs run")
    with pytest.raises(ConfigError, match=SHARDED_ON_CPU.replace("(", r"\(")):
        check_device(cfg)


def test_a_sharded_config_under_nproc_is_one_line_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = lmtune("train", str(CONFIGS / "fsdp2-lora.yaml"), "--nproc", "2", "--set",
                  f"training.output_dir={tmp_path / 'run'}", timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"lmtune: error: training.fsdp: {SHARDED_ON_CPU}"
    assert not (tmp_path / "run").exists()


def test_launch_options_are_checked(tmp_path):
    from lmtune.cli import main

    assert main(["train", "missing.yaml", "--nproc", "2", "--nnodes", "2", "--node-rank", "2"]) == 2


def test_workers_get_the_cores_split_and_a_loopback_rendezvous():
    from lmtune.launch.torchrun import Launch, torchrun_args, worker_env

    env = worker_env(Launch(nproc=2), {"PATH": os.environ.get("PATH", "")})
    cores = len(os.sched_getaffinity(0))
    assert env["OMP_NUM_THREADS"] == str(max(cores // 2, 1)) and env["MASTER_ADDR"] == "127.0.0.1"
    assert "--rdzv-endpoint=127.0.0.1:0" in torchrun_args(Launch(nproc=2))
    nodes = torchrun_args(Launch(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400))
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29400"} <= set(nodes)
