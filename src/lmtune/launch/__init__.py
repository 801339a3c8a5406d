"""Several processes, GPUs or machines: launched by ``torchrun``, trained by Trainer / Accelerate.

- ``torchrun.py``: ``lmtune train --nproc N [--nnodes M ...]`` starts the run under PyTorch's own
  launcher (``torch.distributed.run``), with the CPU cores split between processes and Ctrl-C
  reaching each worker once.
- ``agent.py``: the launcher process; a failed rank ends it with one line, not torchrun's report.
- ``ranks.py``: what a run does differently as one of several processes (rank 0 writes and
  evaluates, the others wait), the same whether lmtune or the user started ``torchrun``.

Data parallelism itself (DDP, FSDP2, DeepSpeed ZeRO) is Trainer's and Accelerate's; nothing here
splits batches or reduces gradients.
"""
