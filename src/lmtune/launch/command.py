"""``lmtune train --nproc N``: the launch options, and the command each worker runs under torchrun.

The checks before the workers start are the CLI's (``lmtune.cli.cmd_train``): they need the run's modules,
which build on this package (``ranks.py``).
"""

from __future__ import annotations

import argparse

from lmtune.errors import ConfigError
from lmtune.launch.torchrun import Launch


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


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The same ``lmtune train`` command, without the launch options."""
    argv = ["train", args.config]
    for item in args.set or []:
        argv += ["--set", item]
    argv += ["--overwrite"] * args.overwrite + ["--resume"] * args.resume
    argv += ["--memory-budget", args.memory_budget] if args.memory_budget else []
    return (["--debug"] if args.debug else []) + argv
