"""``lmtune train --nproc N``: check once, then start the workers under torchrun."""

from __future__ import annotations

import argparse
from typing import Any

from lmtune.errors import ConfigError
from lmtune.launch.torchrun import Launch, launch_workers


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("several processes (torchrun; global batch = batch x processes x accumulation)")
    g.add_argument("--nproc", type=int, default=1, metavar="N", help="processes on this machine (GPUs, or CPU groups)")
    g.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines taking part (each runs this command)")
    g.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's number, 0 .. M-1")
    g.add_argument("--master-addr", metavar="HOST", help="address of machine 0 (several machines)")
    g.add_argument("--master-port", type=int, metavar="PORT", help="a free port on machine 0 (default 29500)")


def launch_of(args: argparse.Namespace) -> Launch:
    launch = Launch(args.nproc, args.nnodes, args.node_rank, args.master_addr, args.master_port)
    if launch.nproc < 1 or launch.nnodes < 1:
        raise ConfigError("--nproc and --nnodes: at least 1")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise ConfigError(f"--node-rank: {launch.node_rank} is not between 0 and --nnodes - 1 ({launch.nnodes - 1})")
    if launch.nnodes > 1 and not launch.master_addr:
        raise ConfigError("--master-addr: several machines (--nnodes > 1) need the address of machine 0")
    return launch


def train_in_processes(cfg: Any, args: argparse.Namespace, launch: Launch) -> int:
    """Everything checked in this process first (one line, nothing started), then N workers; their exit status."""
    from lmtune.models import resolve
    from lmtune.preflight import preflight, refuse_distributed_config

    refuse_distributed_config(cfg)
    preflight(cfg, overwrite=args.overwrite, resume=args.resume, world_size=launch.nproc * launch.nnodes)
    resolve(cfg.model.name)  # the embedded GGUF model is converted once, here, not by N workers at once
    return launch_workers(launch, worker_argv(args))


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The same ``lmtune train`` command, without the launch options."""
    argv = ["train", args.config]
    for item in args.set or []:
        argv += ["--set", item]
    argv += ["--overwrite"] * args.overwrite + ["--resume"] * args.resume
    argv += ["--memory-budget", args.memory_budget] if args.memory_budget else []
    return (["--debug"] if args.debug else []) + argv
