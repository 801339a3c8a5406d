"""The Optuna storage and study a sweep runs in, opened the same way by every process that joins it."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError

DEFAULT_DB = "study.db"
SQLITE_LOCK_TIMEOUT_S = 60
SETTINGS = "lmtune_sweep"  # study user attribute: what the study searches, fixed when it is created


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / DEFAULT_DB).resolve()}"


def shown_url(url: str) -> str:
    """The storage URL without its password, for messages and sweep.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url: str, heartbeat: int) -> Any:
    """An RDB storage whose running trials beat every ``heartbeat`` s; silent for twice that, one is
    failed and queued again with the same parameters (Optuna's stale-trial retry)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    # several processes on one SQLite file: wait for another's write lock instead of failing at once
    engine = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
        for attempt in range(3):  # processes started at once race to create the tables; the loser retries
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=retry,
                )  # fmt: skip
            except SQLAlchemyError as e:
                if attempt == 2:
                    raise LmtuneError(f"--storage {shown_url(url)}: cannot open it ({_first_line(e)})") from None
                time.sleep(1 + attempt)
            except (ImportError, ValueError) as e:  # no driver for the dialect, a malformed URL
                raise LmtuneError(f"--storage {shown_url(url)}: cannot open it ({_first_line(e)})") from None
    raise AssertionError("unreachable")


def open_study(storage: Any, name: str, direction: str, settings: dict[str, Any], seed: int, prune: bool) -> Any:
    """Create the study, or join it; refuse one that was started for another search."""
    import optuna

    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if prune else optuna.pruners.NopPruner()
    # n_startup_trials=2 (Optuna's default is 5): lmtune sweeps are a handful of trials, each a whole run
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True, pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )  # fmt: skip
    recorded = study.user_attrs.get(SETTINGS)
    if recorded is None:
        study.set_user_attr(SETTINGS, settings)
    elif recorded != settings:
        changed = sorted(k for k in settings if recorded.get(k) != settings[k])
        raise LmtuneError(
            f"study {name!r} was started with another sweep ({', '.join(changed)} differ); "
            "give a new --study NAME, or restore the sweep section it was started with"
        )
    return study


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
