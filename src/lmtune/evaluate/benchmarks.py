"""Standard benchmarks (ARC, HellaSwag, a local task YAML, ...) through lm-evaluation-harness's Python API.

What fine-tuning cost in general ability: the same lm-eval tasks scored on the base and the tuned model.
`load_benchmarks` loads every task's dataset before training, so one that cannot load stops the run before
anything is written; `run_benchmarks` scores the run's own model in memory (no second copy of the weights).
lm-eval is the ``benchmarks`` extra: imported inside the functions only.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from unittest.mock import patch

from lmtune.errors import ConfigError

KEY = "eval.benchmarks"

# Means (acc, exact_match, ...) get lm-eval's closed-form standard error whatever this is (it only has to be
# > 0); only metrics without one (f1, mcc, bleu, ...) are bootstrapped.  1,000 resamples estimate a standard
# error to about 2% of itself, plenty for an error bar, and are 100x cheaper than lm-eval's default 100,000.
BOOTSTRAP_ITERS = 1000

BENCHMARK_SETTINGS: dict[str, Any] = {
    "library": "lm-evaluation-harness (lm_eval.evaluator.evaluate)",
    "model": "lm_eval.models.huggingface.HFLM wrapping the run's own model in memory (the base scores: adapter off)",
    "chat_template": "not applied (lm-eval's default): prompts are the task's plain text",
    "num_fewshot": "the task's own setting, else 0",
    "bootstrap_iters": BOOTSTRAP_ITERS,
    "stderr": "closed form for means (acc, exact_match); bootstrap for the rest; null where lm-eval gives none",
}


def benchmark_settings(limit: int | None) -> dict[str, Any]:
    """`BENCHMARK_SETTINGS` with the lm-eval version and this run's documents per task (None: all)."""
    import lm_eval  # its top level is light: the version, nothing of torch or datasets

    return {**BENCHMARK_SETTINGS, "lm_eval_version": lm_eval.__version__, "limit": limit}


@dataclass
class Benchmarks:
    """lm-eval tasks with their datasets loaded, ready for `run_benchmarks` on any number of models."""

    names: list[str]
    """What is reported, in config order: task names (a local YAML's ``task:``), group names, a tag's tasks."""
    tasks: dict[str, Any]
    """lm-eval's ``TaskManager.load`` result: ``{"tasks": {name: Task}, "groups": {...}, "group_map": {...}}``."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Hub tasks left out while the hub cannot be reached (``offline="skip"``): entry -> the reason, one line."""


class HubUnreachable(ConfigError):
    """A benchmark's dataset is on the hub, which cannot be reached, and it is not in the local cache."""


def load_benchmarks(names: list[str], *, offline: Literal["fail", "skip"] = "fail") -> Benchmarks:
    """Load the tasks of ``eval.benchmarks`` and their datasets now; one-line `ConfigError` for any that cannot.

    An entry ending in ``.yaml`` / ``.yml`` is a local task YAML (relative to the current directory), any
    other an lm-eval task, group or tag name.  Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or the hub
    probe fails) ``datasets`` is kept off the network, so a hub dataset loads from the local cache or fails
    at once; ``offline="skip"`` leaves such a task out (`Benchmarks.skipped`) instead of failing.
    """
    specs = {name: _spec(name) for name in names}
    folders = tuple(str(path.parent) for _, path, group in specs.values() if group)
    defaults = any(path is None for _, path, _ in specs.values())  # the built-in tasks only when one is named
    manager = _new_task_manager(folders, defaults) if folders else _kept_task_manager(defaults)
    for task in [task for task, path, _ in specs.values() if path is None and task not in manager.task_index]:
        close = difflib.get_close_matches(task, manager.all_tasks, n=3)  # before any dataset is loaded
        tip = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ConfigError(f"{KEY}: unknown lm-eval task {task!r}{tip}")
    hub_off = _offline()
    out = Benchmarks(names=[], tasks={"tasks": {}, "groups": {}, "group_map": {}})
    with _quiet(), _hub_switched_off(hub_off):
        for name, (task, path, group) in specs.items():
            try:  # a task YAML by its path: that very file, even if a built-in task has the same name
                loaded = manager.load([str(path) if path and not group else task])
            except Exception as e:  # noqa: BLE001 - lm-eval and datasets raise many kinds; the user needs one line
                error = _load_error(task, e, hub_off, _dataset_of(manager, task, path))
                if isinstance(error, HubUnreachable) and offline == "skip":
                    out.skipped[name] = str(error)
                    continue
                raise error from None
            for part in ("tasks", "groups", "group_map"):
                out.tasks[part].update(loaded.get(part) or {})
            whole = task in loaded["tasks"] or task in (loaded.get("groups") or {})
            out.names += [n for n in ([task] if whole else loaded["tasks"]) if n not in out.names]  # a tag: its tasks
    return out


def _spec(name: str) -> tuple[str, Path | None, bool]:
    """(task or group name, the YAML file or None, is it a group) of one ``eval.benchmarks`` entry."""
    if not name.lower().endswith((".yaml", ".yml")):
        return name, None, False
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{KEY}: {name}: no such task YAML file")
    try:
        cfg = _read_yaml(path)
    except Exception as e:  # noqa: BLE001 - any YAML or decoding problem
        raise ConfigError(f"{KEY}: {name}: not a readable YAML file ({_first_line(e)})") from None
    if isinstance(cfg, dict) and isinstance(cfg.get("group"), str):
        return cfg["group"], path, True
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
        raise ConfigError(f"{KEY}: {name}: has no 'task:' name (an lm-eval task YAML starts with 'task: my_task')")
    return cfg["task"], path, False


def _read_yaml(path: Path) -> Any:
    """The YAML's data; lm-eval's own tags (``!function utils.f``) are read as plain values, not run."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - a SafeLoader


@lru_cache(maxsize=2)
def _kept_task_manager(defaults: bool) -> Any:
    """lm-eval's index of its ~230 built-in task folders takes seconds (6 s on 2 cores): built once."""
    return _new_task_manager((), defaults)


def _new_task_manager(include: tuple[str, ...], defaults: bool) -> Any:
    """A task YAML is loaded by its path (lm-eval finds its ``include:`` and ``!function`` beside it); a
    group YAML's folder is indexed, so its members are found by name (a user's folder: not kept)."""
    with _quiet():
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=list(include) or None, include_defaults=defaults)


def _offline() -> bool:
    """As lmtune decides elsewhere (data/rows.py): the environment says so, else the bounded hub probe."""
    from lmtune import models

    flags = (os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f in ("1", "true", "yes") for f in flags) or not models.hub_reachable()


@contextmanager
def _hub_switched_off(offline: bool) -> Iterator[None]:
    """Offline, ``datasets`` must not try the network (and wait on its timeouts): switch its offline mode
    on for the load, as HF_HUB_OFFLINE=1 would have at import.  A dataset in the local cache still loads."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _dataset_of(manager: Any, task: str, path: Path | None) -> str | None:
    entry = manager.task_index.get(task)
    try:
        cfg = entry.cfg if entry is not None and entry.cfg else _read_yaml(path) if path else {}
    except Exception:  # noqa: BLE001 - only for the message; the error's own text names the dataset too
        return None
    return cfg.get("dataset_path") if isinstance(cfg, dict) else None


def _load_error(task: str, e: Exception, offline: bool, dataset: str | None) -> ConfigError:
    """The one line for a task that cannot load; offline with the hub's dataset not cached, the way out."""
    if offline and isinstance(e, ConnectionError):  # datasets' "Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"
        quoted = re.search(r"(?:reach|dataset) '([^']+)'", str(e))
        dataset = dataset or (quoted.group(1) if quoted else "?")
        return HubUnreachable(
            f"{KEY}: {task}: its dataset {dataset} is on the Hugging Face hub, which cannot be reached (offline?); "
            "run online once to cache it, or point a local task YAML's dataset_path / dataset_kwargs.data_files "
            "at local files"
        )
    return ConfigError(f"{KEY}: {task}: cannot load ({_first_line(e)})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# HFLM warns about what lmtune does on purpose (an already-loaded model, one process)
_EXPECTED = ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model")


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval logs every task, request type and setting at INFO (the CLI's root logger shows INFO): WARNING
    and up only (``--debug`` keeps it all), less the warnings about what lmtune does on purpose."""
    log = logging.getLogger("lm_eval")
    level, hf = log.level, logging.getLogger("lm_eval.models.huggingface")
    if logging.INFO <= log.getEffectiveLevel() < logging.WARNING:
        log.setLevel(logging.WARNING)
    hf.addFilter(_unexpected)
    try:
        yield
    finally:
        log.setLevel(level)
        hf.removeFilter(_unexpected)


def _unexpected(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_EXPECTED)


def run_benchmarks(
    model: Any, tokenizer: Any, benchmarks: Benchmarks, limit: int | None, batch_size: int
) -> dict[str, dict[str, Any]]:
    """Score ``model`` (a PreTrainedModel or a PeftModel, as it is now) on the loaded tasks.

    Returns, per name of `Benchmarks.names`: ``{"metrics": {"acc": 0.5}, "stderr": {"acc": 0.05},
    "samples": documents scored, "kind": "multiple_choice"}``; a filter other than lm-eval's ``none`` is
    kept in the metric's name (``exact_match (strict-match)``).  The model's train/eval mode is restored.
    """
    if not benchmarks.names:
        return {}
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    for task in benchmarks.tasks["tasks"].values():  # what simple_evaluate does, without reseeding the
        if task.get_config("num_fewshot") is None:  # process's random generators or collecting env info
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)  # lm-eval's default (lm_eval.defaults.DEFAULT_OTHER_SEED)
    modes = {m: m.training for m in model.modules()}
    # A PeftModel passes .device, .config, .eval(), generate() and forward to its base model, which is all
    # HFLM reads, so it is given as is: inside disable_adapter() it scores the base weights.
    try:  # DISABLE_MULTIPROC: bootstrap in this process, no fork of a process that holds the model
        with _quiet(), patch.dict(os.environ, {"DISABLE_MULTIPROC": "1"}):
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            results = evaluate(lm=lm, task_dict=benchmarks.tasks, limit=limit, bootstrap_iters=BOOTSTRAP_ITERS,
                               log_samples=False, cache_requests=False, apply_chat_template=False)  # fmt: skip
    finally:
        for module, training in modes.items():  # HFLM calls model.eval(); put every module back as it was
            module.training = training
    return {name: _scores(results, name, benchmarks.tasks) for name in benchmarks.names}


def _scores(results: dict[str, Any], name: str, loaded: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's ``{"acc,none": .5, "acc_stderr,none": .05, "alias": ...}`` as plain metric names."""
    metrics: dict[str, Any] = {}
    stderr: dict[str, Any] = {}
    for key, value in results["results"].get(name, {}).items():
        if "," not in key:  # alias, name, sample_len
            continue
        metric, filter_name = key.split(",", 1)
        shown = metric.removesuffix("_stderr") + ("" if filter_name == "none" else f" ({filter_name})")
        if metric.endswith("_stderr"):
            stderr[shown] = value if isinstance(value, (int, float)) else None  # "N/A": one document, or none
        else:
            metrics[shown] = value
    group = (loaded.get("groups") or {}).get(name)
    leaves = group.get_all_tasks() if group is not None else [loaded["tasks"][name]]
    counts = results.get("n-samples", {})
    return {
        "metrics": metrics,
        "stderr": {m: stderr.get(m) for m in metrics},
        "samples": sum(counts.get(t.task_name, {}).get("effective", 0) for t in leaves),
        "kind": "/".join(sorted({str(t.OUTPUT_TYPE) for t in leaves})),
    }


def compare_benchmarks(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task and metric scored on both models: the two scores, the change and the two standard errors."""
    out: dict[str, dict[str, Any]] = {}
    for name in [n for n in tuned if n in base]:
        b, t = base[name], tuned[name]
        out[name] = {
            m: {
                "base": b["metrics"][m],
                "finetuned": t["metrics"][m],
                "change": _change(b["metrics"][m], t["metrics"][m]),
                "base_stderr": b.get("stderr", {}).get(m),
                "finetuned_stderr": t.get("stderr", {}).get(m),
            }
            for m in t["metrics"]
            if m in b["metrics"]
        }
    return out


def _change(base: Any, tuned: Any) -> float | None:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (base, tuned))
    return tuned - base if numbers else None
