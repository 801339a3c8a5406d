"""Guards around training: a non-finite loss or gradient, running out of memory, Ctrl-C.

Each ends the run with a message that names the step and what to change, and leaves
the last committed checkpoint in place.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lmtune.errors import LmtuneError

NON_FINITE_REMEDIES = (
    "a lower training.learning_rate (now {lr:g}), model.dtype: float32 instead of half precision, "
    "or training.max_grad_norm: 1.0 (gradient clipping)"
)
MEMORY_KNOBS = (
    "a smaller training.per_device_train_batch_size (raise training.gradient_accumulation_steps to keep the "
    "effective batch), a smaller data.max_length, training.gradient_checkpointing: true, or a parameter-efficient "
    "method (method: lora; qlora on a CUDA GPU)"
)


class TrainingStopped(LmtuneError):
    """Training cannot go on; the run folder keeps its last committed checkpoint."""

    exit_code = 1


class Interrupted(LmtuneError):
    """Ctrl-C: a checkpoint was saved and the run can be resumed."""

    exit_code = 130


def non_finite_stop(step: int, what: str, lr: float, checkpoint: str | None) -> TrainingStopped:
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been saved yet"
    return TrainingStopped(
        f"training stopped at step {step}: the {what} is not a finite number (NaN or infinity); {kept}. "
        f"Try {NON_FINITE_REMEDIES.format(lr=lr)}, then run again with --overwrite"
    )


def out_of_memory(step: int, error: BaseException) -> TrainingStopped:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrainingStopped(f"out of memory at step {step} ({first[:160]}). Try {MEMORY_KNOBS}")


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def gradients_finite(model: Any) -> bool:
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


@contextmanager
def ctrl_c_requests_stop() -> Iterator[threading.Event]:
    """While inside, the first Ctrl-C sets the yielded event instead of raising; a second one raises.

    Training checks the event after each step, saves a checkpoint and stops.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
