"""Resident memory that stays what the run uses (``training.trim_memory``).

glibc's allocator keeps blocks a training step freed; the next step asks for blocks of other sizes
(packed rows change length), so the process's resident memory creeps up over a run: the demo went from
2.3 GB after the first steps to 3.0 GB at the end of training, with the same tensors alive. Handing the
free pages back after each optimizer step (``malloc_trim``, which also releases free pages inside the
heap) keeps it at what the step really needs. Setting ``MALLOC_TRIM_THRESHOLD_=0`` does the same on
every ``free`` and doubled the step time here; once per step costs milliseconds (``bench/plan.py``).
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any


@cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        return None


def release_free_memory() -> bool:
    """Give the allocator's free pages back to the operating system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_callback() -> Any:
    """A ``TrainerCallback`` that releases free memory after every optimizer step."""
    from transformers import TrainerCallback

    class TrimMemory(TrainerCallback):
        trims = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.trims += release_free_memory()

    return TrimMemory()
