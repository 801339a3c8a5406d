"""The launcher process: ``torch.distributed.run`` with one line for a failed rank.

``python -m lmtune.launch.agent [torchrun arguments] -m lmtune train ...`` is ``torchrun`` itself
(same arguments, same agent), except that a failure ends with one line and the failed rank's exit
status instead of torchrun's report: a rank that stopped on a problem lmtune names has printed it
(rank 0) or left it in its error file (the other ranks, so that N ranks do not print N copies).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from lmtune.launch.ranks import rank


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    _stop_with_parent()
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        return _one_line(e.failures)
    except SignalException as e:  # the workers were stopped with the same signal
        return 128 + int(e.sigval)
    return 0


def _stop_with_parent() -> None:
    """If ``lmtune train`` dies (even by SIGKILL), this launcher gets SIGTERM and stops the workers it started."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed command leaves the launcher to finish the run
        pass


def _one_line(failures: dict[int, Any]) -> int:
    """The failed ranks' outcome as one line (none when rank 0 printed its own); the exit status to return."""
    named = {r: f for r, f in failures.items() if str(f.message).startswith("lmtune: ")}
    if named:  # a problem lmtune named: rank 0's was printed by rank 0, another rank's is printed here
        first = min(named)
        if first != 0:
            print(named[first].message, file=sys.stderr)
        # a rank that was still exiting when the launcher stopped it has a signal, not its status
        codes = [f.exitcode for _, f in sorted(named.items()) if f.exitcode and f.exitcode > 0]
        return codes[0] if codes else 1
    # the ranks the launcher stopped itself end with SIGTERM: name the one that failed first
    causes = [r for r, f in failures.items() if f.exitcode != -signal.SIGTERM] or list(failures)
    first = min(causes)
    code = failures[first].exitcode
    how = f"was stopped by {signal.Signals(-code).name}" if code is not None and code < 0 else \
        f"stopped with exit status {code}"  # fmt: skip
    print(f"lmtune: error: rank {first} {how}; all ranks stopped (--debug shows its traceback)", file=sys.stderr)
    return code if code and code > 0 else 1


def report_error(message: str) -> None:
    """Print a one-line error; under torchrun also leave it for the launcher, and print it on rank 0 only.

    The other ranks stay quiet, so N ranks stopping on the same problem print it once; the launcher
    prints a line of theirs when rank 0 had none.
    """
    import json
    import os
    import time

    if rank() == 0:
        print(message, file=sys.stderr, flush=True)  # before the launcher can stop this process
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)
    elif rank() != 0:
        print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
