"""What an objective tells the run: its data, its trainer, its measures, and the config keys it does not use.

The run (``lmtune.pipeline.finetune``) owns everything that is the same for every objective (preflight,
ranks, load, method, callbacks, guards, checkpoints, save, evaluation, report); an objective owns only
what differs, as the functions of one `Objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmtune.data.formats import Example


@dataclass
class Task:
    """The objective's training and held-out data, ready for its trainer and its measures."""

    train: Any
    """What the trainer takes: tokenised rows (sft) or a ``datasets.Dataset`` in TRL's columns."""
    eval: Any
    """The held-out set the trainer evaluates on (None when ``training.eval_strategy`` is ``no``)."""
    held_out: list[Example]
    """Held-out examples for the measures before and after training."""
    train_count: int
    lines: list[str] = field(default_factory=list)
    """What the run prints about the data."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What only this objective's own functions read (e.g. sft's encoded held-out rows)."""


@dataclass
class Built:
    """A trainer ready to ``train()``, with what the run records about it."""

    trainer: Any
    facts: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[], dict[str, Any]] | None = None
    """Called once training ended or failed (e.g. to remove privacy hooks); returns more facts."""
    autocast_adapters: bool = False
    """Adapters take the bfloat16 input under autocast as it is (``lmtune.speed.casts``)."""


@dataclass(frozen=True)
class Objective:
    """One training objective, registered by name in ``lmtune.objectives.OBJECTIVES``.

    ``prepare(cfg, data, encoder, tokenizer) -> Task`` turns the checked data into the trainer's;
    ``trainer(model, tokenizer, task, cfg, callbacks, echo) -> Built`` builds its Trainer (the run makes it
    lmtune's with ``lmtune.train.guarded``); ``measures(model, tokenizer, encoder, task, cfg, tuned) ->
    (metrics, predictions)`` are its held-out measures before (``tuned=False``) and after training.
    """

    name: str
    prepare: Callable[..., Task]
    trainer: Callable[..., Built]
    measures: Callable[..., tuple[dict[str, Any], list[dict[str, Any]]]]
    unused: tuple[str, ...] = ()
    """Config keys (``section.key``) and whole sections (``section``) this objective does not read: setting
    one is an error when the run is checked, and the run's config.yaml leaves them out."""
    head: str = "causal"
    """``causal``: a language model (perplexity and the forgetting figure apply); ``score``: a one-score
    sequence classifier."""
    attach: Callable[..., Any] | None = None
    """``attach(model, cfg, ctx) -> model``: the method, where the objective attaches it its own way."""
    save: Callable[..., bool] | None = None
    """``save(trainer, model, tokenizer, out) -> bool``: the weights saved the objective's own way
    (True), or False for the run's usual save."""
    tune: Callable[..., tuple[Any, dict[str, Any], list[str]]] | None = None
    """``tune(model, tokenizer, task, cfg, memory_budget) -> (cfg, facts, lines)``: lmtune's own speed levers
    and the plan, before the run folder is created; None where the objective trains with TRL's step."""
    derive: Callable[..., Any] | None = None
    """``derive(model, tokenizer, task, cfg, echo) -> model``: the model the run trains, made from the loaded one,
    which stays the one the tuned model is compared with (``base``); None: the run trains the loaded model."""
    derived_row: str = ""
    """The name of the derived model's row before training (``metrics.json``, the table)."""
    settings: Callable[[Any], dict[str, Any]] = lambda cfg: {}
    """The objective's own settings as ``metrics.json`` records them."""
    lever_note: str = ""
    """Printed once when the run skips lmtune's own training step levers (plan, packing, ...) for it."""
