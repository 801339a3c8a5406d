"""``lmtune sweep CONFIG --trials N [--storage URL] [--study NAME]``: the verb and its arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError, LmtuneError
from lmtune.extras import require


def add_parser(verbs: Any) -> None:
    """Register ``lmtune sweep`` on the CLI's sub-parsers."""
    s = verbs.add_parser("sweep", help="search hyper-parameters with Optuna; each trial is a whole run")
    s.add_argument("config", help="YAML run config with a sweep section (see configs/sweep-demo.yaml)")
    s.add_argument("--trials", type=int, help="finished trials the study should end with, counting earlier "
                   "and other processes' (default: sweep.trials); running it again when done adds none")  # fmt: skip
    s.add_argument("--storage", metavar="URL", help="Optuna RDB storage every process of the study shares, e.g. "
                   "postgresql://user:pw@host/db (default: sqlite:///<training.output_dir>/study.db)")  # fmt: skip
    s.add_argument("--study", metavar="NAME", help="study name in the storage (default: the sweep folder's name)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> None:
    require("sweep", what="lmtune sweep")  # before the config is read or the sweep folder made
    import optuna

    from lmtune.config import apply_override, read_yaml, validate_config
    from lmtune.config.sweep import direction_of, prunes
    from lmtune.objectives import check_keys
    from lmtune.sweep.report import text_table, write_outputs
    from lmtune.sweep.storage import default_storage, open_storage, open_study, shown_url
    from lmtune.sweep.study import Sweep, run_trials

    raw = read_yaml(Path(args.config))
    for item in args.set or []:
        apply_override(raw, item)
    cfg = validate_config(raw, args.config)  # the search space too: a bad one stops here, nothing written
    check_keys(cfg, args.config)  # a key its objective or method does not read, before the first trial
    if cfg.sweep is None:
        raise ConfigError(f"{args.config}: no sweep section (what to search: see configs/sweep-demo.yaml)")
    if cfg.stages:
        raise ConfigError(f"{args.config}: stages: a sweep's trials are single runs; remove the stages")
    trials = args.trials if args.trials is not None else cfg.sweep.trials
    if trials is None or trials <= 0:
        raise LmtuneError("--trials: give a positive number of trials (or sweep.trials in the config)")
    folder = Path(cfg.training.output_dir)
    name = args.study or folder.resolve().name
    check_sweep_folder(folder, name)
    folder.mkdir(parents=True, exist_ok=True)
    url = args.storage or default_storage(folder)
    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.ERROR)
    storage = open_storage(url, cfg.sweep.heartbeat)
    direction = direction_of(cfg.sweep)
    settings = {"objective": cfg.sweep.objective, "direction": direction, "space": cfg.sweep.space}
    study = open_study(storage, name, direction, settings, cfg.seed, prunes(cfg))
    sweep = Sweep(cfg=cfg, raw=raw, folder=folder, trials=trials, storage_url=url)
    print(f"sweep: study {name!r} in {shown_url(url)}, {trials} trials of {cfg.sweep.objective} ({direction})")
    write_outputs(sweep, study)  # sweep.json at once: it marks the folder as this study's
    run_trials(sweep, study, after_trial=write_outputs)
    summary = write_outputs(sweep, study)
    print("\n" + text_table(summary))
    ran = f"this process ran {len(sweep.ran)} trial(s)" if sweep.ran else "this process ran no trial (all done)"
    print(f"{ran}; sweep folder: {folder}  (best.yaml, sweep.json, sweep.md, sweep.html)")


def check_sweep_folder(folder: Path, study: str) -> None:
    """Refuse a folder that holds something else than this study's sweep (nothing the user made is touched)."""
    from lmtune.sweep.report import sweep_json
    from lmtune.sweep.storage import DEFAULT_DB

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"training.output_dir: {folder} is a file, not a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not sweep_json(folder).is_file():
        if all(p.name.startswith(DEFAULT_DB) for p in folder.iterdir()):
            return  # the storage was created and the sweep stopped before its first sweep.json
        raise ConfigError(
            f"training.output_dir: {folder} holds files that are not a sweep; give the sweep its own folder "
            "(--set training.output_dir=...)"
        )
    try:
        recorded = json.loads(sweep_json(folder).read_text(encoding="utf-8")).get("study")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ConfigError(f"{sweep_json(folder)}: not a sweep.json lmtune wrote") from None
    if recorded != study:
        raise ConfigError(
            f"training.output_dir: {folder} holds the sweep of study {recorded!r}, not {study!r}; "
            "give this study its own folder, or --study " + str(recorded)
        )
