"""``lmtune plan CONFIG``: build the run's model and data as ``lmtune train`` would, probe, print the plan."""

from __future__ import annotations

import re
from typing import Any

from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.plan import Plan, make_plan

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``6GB``, ``6000MB``, ``6G``, ``6.5GiB`` or a plain number of megabytes, in bytes."""
    match = SIZE.match(text)
    if not match:
        raise LmtuneError(f"--memory-budget: '{text}' is not a size (e.g. 6GB or 6000MB)")
    value, unit = float(match.group(1)), (match.group(2) or "M").upper()
    return int(value * 1024 ** "KMGT".index(unit) * 1024)


def plan_run(cfg: RunConfig, memory_budget: int | None = None, echo: Any = print) -> Plan:
    """The plan of ``cfg``: its model, method, levers and data exactly as training builds them; nothing written."""
    from transformers import set_seed

    from lmtune.build import apply_speed_levers, check_data_fits, check_device, load_for_training
    from lmtune.data.cache import tokenize_cached
    from lmtune.data.encode import Encoder
    from lmtune.data.general import reference_rows
    from lmtune.data.prepare import check_enough_examples, load_task_data
    from lmtune.methods import MethodContext, apply_method
    from lmtune.methods.continual import replay_rows
    from lmtune.train import total_steps

    if cfg.objective != "sft":
        raise LmtuneError(f"lmtune plan: objective {cfg.objective} is not planned yet; only sft runs are")
    check_device(cfg)
    data = load_task_data(cfg.data, cfg.seed)
    check_data_fits(cfg, data)
    set_seed(cfg.seed)
    model, tokenizer, base, _ = load_for_training(cfg)
    d = cfg.data
    encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
    tokens, _ = tokenize_cached(encoder, data, d, cfg.seed)
    train_rows = tokens.train
    check_enough_examples(len(train_rows), cfg)
    if cfg.continual.replay_fraction:
        regular = reference_rows(encoder, cfg.continual.reference)
        train_rows = train_rows + replay_rows(regular, len(train_rows), cfg.continual.replay_fraction)
    model = apply_method(model, cfg, MethodContext(total_steps=total_steps(len(train_rows), cfg), base_path=base))
    apply_speed_levers(model, cfg, train_rows)
    plan = make_plan(model, tokenizer, train_rows, tokens.eval, cfg, memory_budget)
    echo(plan.table())
    return plan
