"""``lmtune train CONFIG --nproc N``: the same command, run by N processes under ``torchrun``.

The parent checks everything first (config, data, model name, run folder), so a mistake is one line
and nothing starts. It then runs PyTorch's launcher (``torch.distributed.run``, through ``agent.py``)
in a session of its own: a Ctrl-C at the terminal reaches the parent only, which passes it on once to
each worker (torchrun alone would forward a second SIGINT, the one that skips the checkpoint).

On one machine without GPUs the rendezvous is on the loopback interface (as Accelerate's own test
launcher sets up CI), and the machine's cores are split between the processes: torchrun would
otherwise give each process one thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Launch:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def needed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1


def torchrun_args(launch: Launch) -> list[str]:
    """The launcher's own arguments: a local rendezvous on one machine, a static one across machines."""
    args = [f"--nproc-per-node={launch.nproc}", f"--nnodes={launch.nnodes}", "--max-restarts=0"]
    if launch.nnodes == 1 and launch.master_addr is None:
        # the agent's own address too: it would look the host name up (slow, or wrong, on an offline machine)
        return [*args, "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", f"--rdzv-id=lmtune-{os.getpid()}",
                "--local-addr=127.0.0.1"]  # fmt: skip
    return [*args, f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr or '127.0.0.1'}",
            f"--master-port={launch.master_port or 29500}"]  # fmt: skip


def worker_env(launch: Launch, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: threads per process, and loopback networking for a one-machine run."""
    env = dict(os.environ if environ is None else environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env.setdefault("OMP_NUM_THREADS", str(max(cores // launch.nproc, 1)))
    if launch.nnodes == 1 and launch.master_addr is None:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a host name that resolves off the loopback cannot break gloo
    env["PYTHONUNBUFFERED"] = "1"  # rank 0's lines appear as they are printed
    return env


def launch_workers(launch: Launch, lmtune_argv: list[str]) -> int:
    """Run ``lmtune <lmtune_argv>`` in ``launch.nproc`` processes on this machine; the exit status of the run."""
    command = [sys.executable, "-m", "lmtune.launch.agent", *torchrun_args(launch), "-m", "lmtune", *lmtune_argv]
    agent = subprocess.Popen(command, env=worker_env(launch), start_new_session=True)
    while True:
        try:
            return agent.wait()
        except KeyboardInterrupt:
            interrupt_workers(agent.pid)  # each worker saves a checkpoint and stops; a second Ctrl-C stops at once


def interrupt_workers(agent_pid: int) -> None:
    """SIGINT to each worker (the launcher's children), or to the launcher where they cannot be listed."""
    children = _children(agent_pid)
    for pid in children or [agent_pid]:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the command name: state, ppid, ...
            found.append(int(stat.parent.name))
    return found
