"""Resident memory that stays what the run uses (``training.trim_memory``).

glibc's allocator keeps blocks a training step freed; the next step asks for blocks of other sizes
(packed rows change length), so the process's resident memory creeps up over a run: the demo went from
2.3 GB after the first steps to 3.0 GB at the end of training, with the same tensors alive. Handing the
free pages back after each optimizer step (``malloc_trim``, which also releases free pages inside the
heap) keeps it at what the step really needs. Setting ``MALLOC_TRIM_THRESHOLD_=0`` does the same on
every ``free`` and doubled the step time here.

The trim itself takes milliseconds, but every page it hands back is faulted in again by the next step.
So the trim runs only once resident memory after a step has grown ``TRIM_GROWTH`` above what it was
after the first step (that step's own working set). In practice that is most steps (31 of 32 in a
full fine-tuning of SmolLM2-135M on E2E, 108 of 125 in a LoRA run). For full fine-tuning ``bench/plan.py``
measured the cost as small: 247 s with the trim against 243 s without, for 4,606 against 4,751 MB peak. For
60 LoRA steps of the E2E defaults it was a trade: 233 s and 3,407 MB against 191 s and 3,807 MB. Trimming
less often (at most every 10 steps, or only after a step that raised the peak) was as fast as no trim and
saved no memory: free memory creeps back within a few steps.
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


TRIM_GROWTH = 0.10
"""Resident memory may grow this much above the first step's before free pages are handed back."""


def trim_callback(growth: float = TRIM_GROWTH) -> Any:
    """A ``TrainerCallback`` that releases free memory after an optimizer step once resident memory crept up."""
    from transformers import TrainerCallback

    from lmtune.speed.resident import rss_bytes

    class TrimMemory(TrainerCallback):
        trims = 0
        checks = 0
        reference = 0  # resident memory after the first step: its working set, optimizer state included

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rss, self.checks = rss_bytes(), self.checks + 1
            if not self.reference:
                self.reference = rss
            elif rss > self.reference * (1 + growth):
                self.trims += release_free_memory()

    return TrimMemory()
