"""Run a study's trials until it holds the requested number of finished ones.

Each trial is a whole ``lmtune train`` run, in this process (so the pruner can stop it), in its
own folder ``<sweep folder>/trial-NNNN``.  The study lives in an Optuna RDB storage (a SQLite
file in the sweep folder unless ``--storage`` names another), which is how several processes,
on one machine or many, share it, and how a killed sweep continues.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lmtune.config import RunConfig, validate_config
from lmtune.config.space import key_type, with_value, without_sweep
from lmtune.config.sweep import prunes
from lmtune.errors import LmtuneError
from lmtune.files import atomic_write_text
from lmtune.guards import Interrupted, TrainingStopped
from lmtune.objectives import config_text
from lmtune.sweep.objective import objective_value

FINISHED = ("COMPLETE", "PRUNED")
NOT_RUN = "lmtune_not_run"  # user attribute of a trial created past the requested total, and not run
FOLDER = "lmtune_folder"


MAX_FAILURES_IN_A_ROW = 3
ERROR = "lmtune_error"


class NotRun(Exception):
    """The study already had its trials when this one was created: it is failed at once, never run."""


class TrialFailed(Exception):
    """The trial's run stopped (a non-finite loss, out of memory): a result of its values, not a reason
    to stop the sweep; the trial is failed and another takes its place."""


@dataclass
class Sweep:
    """One process's part in a study: the config it searches around and where its trials go."""

    cfg: RunConfig
    raw: dict[str, Any]
    folder: Path
    trials: int
    storage_url: str
    echo: Any = print
    ran: list[int] = field(default_factory=list)
    failures_in_a_row: int = 0

    @property
    def objective(self) -> str:
        return self.cfg.sweep.objective

    def trial_config(self, params: dict[str, Any], folder: Path) -> RunConfig:
        """The run config of one point of the space: the sweep's config with ``params`` set, no ``sweep``."""
        raw = without_sweep(self.raw)
        for key, value in params.items():
            raw = with_value(raw, key, value)
        return validate_config(with_value(raw, "training.output_dir", str(folder)), f"trial config {folder}")


def run_trials(sweep: Sweep, study: Any, after_trial: Callable[[Sweep, Any], object]) -> None:
    """Run trials until ``sweep.trials`` of the study are finished (COMPLETE or PRUNED), counting other processes'.

    A process that finds the rest of the budget taken by trials running elsewhere waits for them: if one of
    them was killed, its heartbeat stops, Optuna fails it and queues it again, and this process runs it.
    ``after_trial(sweep, study)`` runs after every trial, even a failed one (the sweep's outputs: the
    report module builds on this one, so it is handed in rather than imported).
    """
    waiting_said = False
    while True:
        _fail_stale_trials(study)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        finished, running = sum(s in FINISHED for s in states), states.count("RUNNING")
        if finished >= sweep.trials:
            return
        if finished + running >= sweep.trials:
            if not waiting_said:
                sweep.echo(f"waiting for {running} trial(s) running in other processes ...")
                waiting_said = True
            time.sleep(sweep.cfg.sweep.heartbeat / 2)
            continue
        waiting_said = False
        try:
            study.optimize(lambda trial: run_trial(sweep, trial), n_trials=1, catch=(NotRun, TrialFailed))
        finally:
            after_trial(sweep, study)  # after every trial: a killed sweep still leaves a true sweep.json
        if sweep.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:  # the config, not the sampled values, is at fault
            last = study.get_trials(deepcopy=False)[-1].user_attrs.get(ERROR, "")
            raise TrainingStopped(f"{MAX_FAILURES_IN_A_ROW} trials in a row failed; the last: {last}")


def run_trial(sweep: Sweep, trial: Any) -> float:
    """One trial: its parameters from the sampler, a whole run in its folder, the objective's value."""
    import optuna

    _refuse_if_past_total(sweep, trial)
    # seeded by trial number: reproducible, and two processes never draw the same random points
    trial.study.sampler = optuna.samplers.TPESampler(seed=sweep.cfg.seed + trial.number)
    params = {key: suggest(trial, key, spec) for key, spec in sweep.cfg.sweep.space.items()}
    folder = sweep.folder / f"trial-{trial.number:04d}"
    trial.set_user_attr(FOLDER, folder.name)
    cfg = sweep.trial_config(params, folder)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    sweep.echo(f"trial {trial.number}: {shown}  ->  {folder}")
    sweep.ran.append(trial.number)
    pruning = PruneOnEvalLoss(trial) if prunes(sweep.cfg) else None
    start = time.monotonic()
    metrics = _train(sweep, trial, cfg, pruning)
    took = time.monotonic() - start
    value = objective_value(metrics, sweep.objective)
    if pruning and pruning.pruned_at is not None:
        sweep.echo(f"trial {trial.number}: pruned at step {pruning.pruned_at} ({took:.0f} s)")
        raise optuna.TrialPruned(f"eval loss above the median at step {pruning.pruned_at}")
    if value is None:
        raise LmtuneError(f"trial {trial.number}: {folder / 'metrics.json'} holds no {sweep.objective}")
    sweep.echo(f"trial {trial.number}: {sweep.objective} = {value:.6g} ({took:.0f} s)")
    return value


def _train(sweep: Sweep, trial: Any, cfg: RunConfig, pruning: PruneOnEvalLoss | None) -> dict[str, Any]:
    """The trial's run (``lmtune train``'s pipeline); a run that stops on its own fails the trial, not the sweep."""
    from lmtune.pipeline import finetune

    try:
        # a trial's log lines (Trainer prints each logged step off a terminal) stay in its train_log.jsonl:
        # the sweep's own output is one line per trial
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            metrics = finetune(cfg, echo=lambda *a, **k: None, callbacks=[pruning] if pruning else None)
    except Interrupted:  # the run's own advice (resume this folder) is not how a sweep goes on
        raise Interrupted(
            f"interrupted: trial {trial.number} stopped and is failed; the same command again continues the sweep "
            "with a new trial"
        ) from None
    except TrainingStopped as e:
        sweep.failures_in_a_row += 1
        trial.set_user_attr(ERROR, str(e))
        sweep.echo(f"trial {trial.number}: failed: {e}")
        raise TrialFailed(str(e)) from None
    sweep.failures_in_a_row = 0
    return metrics


def suggest(trial: Any, key: str, spec: Any) -> Any:
    """The trial's value for one space entry (Optuna's own distributions)."""
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if key_type(key) is int:
        return trial.suggest_int(key, low, high, step=spec.get("step", 1), log=log)
    return trial.suggest_float(key, float(low), float(high), step=spec.get("step"), log=log)


def write_best_config(sweep: Sweep, study: Any) -> Path | None:
    """``best.yaml``: the best finished trial's whole config, its output going to ``<sweep folder>/best``."""
    best = best_trial(study)
    if best is None:
        return None
    path = sweep.folder / "best.yaml"
    cfg = sweep.trial_config(best.params, sweep.folder / "best")
    header = f"# best trial {best.number} of study {study.study_name}: {sweep.objective} = {best.value:.6g}\n"
    atomic_write_text(path, header + config_text(cfg))  # trains again as it is
    return path


def best_trial(study: Any) -> Any | None:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


class PruneOnEvalLoss(TrainerCallback):
    """Reports each evaluation's ``eval_loss`` to the trial and stops training when the pruner says so."""

    def __init__(self, trial: Any):
        self.trial = trial
        self.pruned_at: int | None = None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        self.trial.report(loss, state.global_step)
        if self.trial.should_prune():
            # the run still finishes (final evaluation, metrics.json): a pruned trial's folder is a whole run
            self.pruned_at = state.global_step
            control.should_training_stop = True


def _refuse_if_past_total(sweep: Sweep, trial: Any) -> None:
    """Two processes can ask for a trial at the same instant: the one numbered past the total is not run."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
    taken = sum(t.state.name in (*FINISHED, "RUNNING") for t in earlier)
    if taken >= sweep.trials:
        trial.set_user_attr(NOT_RUN, True)
        raise NotRun(f"trial {trial.number}: the study already has {sweep.trials} trials")


def _fail_stale_trials(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
