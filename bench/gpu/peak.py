#!/usr/bin/env python3
"""Run a module or a script in this process and print its peak CUDA memory when it exits.

    python bench/gpu/peak.py -m lmtune train CONFIG      python bench/gpu/peak.py SCRIPT ARGS

The line (``GPU_PEAK {"alloc_gib": ..., "reserved_gib": ..., "wall_s": ...}``) is printed at exit by an
``atexit`` hook, so a command that ends with ``sys.exit`` reports too; without CUDA it prints nothing.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import time

START = time.time()


def report() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gib = 2**30
        line = {"alloc_gib": round(torch.cuda.max_memory_allocated() / gib, 3),
                "reserved_gib": round(torch.cuda.max_memory_reserved() / gib, 3),
                "wall_s": round(time.time() - START, 1)}  # fmt: skip
        print("GPU_PEAK " + json.dumps(line), flush=True)


def main() -> None:
    atexit.register(report)
    if sys.argv[1] == "-m":
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
