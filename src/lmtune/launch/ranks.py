"""One run as several processes: who writes, who evaluates, who waits.

``torchrun`` (started by ``lmtune train --nproc N`` or by the user) sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``. The process group is opened here, before the model loads, so that rank 0 can
tokenise first (the token cache is written once) and evaluate while the others wait; Trainer's
Accelerate state then uses the same group. Everything that writes to the run folder or prints runs on
rank 0 (global rank: on several machines the run folder is rank 0's, or a shared file system).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def distributed() -> bool:
    return world_size() > 1


def init() -> None:
    """Open the process group (gloo on CPU, NCCL on CUDA GPUs) and pin this process to its GPU."""
    if not distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if not is_main():  # rank 0 logs for the run; the others would repeat each line
        logging.getLogger().setLevel(logging.ERROR)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def barrier() -> None:
    if distributed():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache), the others after it finished (and read it)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not distributed():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. Ctrl-C seen by one, acted on by all)."""
    if not distributed():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def close() -> None:
    """Leave the process group: every rank calls this at the same point of the run, and they leave together.

    A rank whose peers had already gone could hang in freeing what still held the group (the DDP wrapper
    of a finished Trainer): about one finished two-process run in ten never returned (rank 0 stuck after
    its work was done, pytorch/pytorch#75097). So every rank frees those first (garbage-collected here),
    then all meet at a barrier and destroy the group while the others are still connected.
    """
    if distributed():
        import gc

        import torch.distributed as dist

        if dist.is_initialized():
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()
