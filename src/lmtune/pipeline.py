"""``lmtune train``, one run for every objective: preflight -> data -> model -> method -> base eval -> the
objective's Trainer under lmtune's guards -> save -> eval -> report.

Stages talk through files in the run folder (``training.output_dir``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lmtune.build import load_for_training
from lmtune.config import RunConfig
from lmtune.data.cache import tokenizer_digest
from lmtune.data.check import write_data_report
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.general import reference_rows
from lmtune.data.prepare import TaskData, summary
from lmtune.evaluate.cost import cost_metrics, measure_cost, plan_cost, with_safety
from lmtune.evaluate.perplexity import perplexity
from lmtune.evaluate.reward import REWARD_SETTINGS, compare_rewards, load_reward_model, reward_scores, reward_summary
from lmtune.evaluate.run import metric_settings
from lmtune.files import atomic_write_json, atomic_write_jsonl, atomic_write_text
from lmtune.launch import ranks
from lmtune.methods import MethodContext, apply_method, count_parameters, settings
from lmtune.objectives import Objective, Task, config_text, objective_of
from lmtune.preflight import preflight, refuse_distributed
from lmtune.provenance import RECORD
from lmtune.report import forgetting_line, privacy_line, text_table, write_reports
from lmtune.run_folder import (
    DATA_REPORT,
    checkpoint_step,
    continue_run_folder,
    prepare_run_folder,
    save_weights,
)
from lmtune.train import fit, shared_callbacks, total_steps

logger = logging.getLogger(__name__)


def finetune(
    cfg: RunConfig,
    overwrite: bool = False,
    resume: bool = False,
    echo: Any = print,
    memory_budget: int | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """The one run of every objective; returns the contents of ``metrics.json``.

    ``callbacks`` (``transformers.TrainerCallback``) join the Trainer's own, e.g. ``lmtune sweep``'s pruner.

    Everything that can be checked is checked before the run folder is created, so a bad
    config, data file or model name leaves nothing behind.  An unfinished run of the same
    config and data in ``training.output_dir`` resumes from its latest committed checkpoint.
    """
    laps = Laps()
    objective = objective_of(cfg)
    if cfg.privacy is not None:
        refuse_distributed("privacy")
    ranks.init()
    out = Path(cfg.training.output_dir)
    checked = preflight(cfg, overwrite, resume)
    data, record, checkpoint = checked.data, checked.record, checked.checkpoint
    judge = load_reward_model(cfg.eval.reward_model) if cfg.eval.reward_model else None
    cost = plan_cost(cfg.eval)  # benchmark tasks and the safety judge load now: what cannot load stops the run here
    laps("checks_and_data")
    ranks.barrier()  # every rank has checked the run folder before rank 0 changes it
    if not ranks.is_main():
        echo = _quiet

    from transformers import set_seed

    set_seed(cfg.seed)
    with ranks.main_first():  # rank 0 converts a GGUF model and writes the token cache; the others read them
        model, tokenizer, base, dtype = load_for_training(cfg, head=objective.head)
        d = cfg.data
        encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
        task = objective.prepare(cfg, data, encoder, tokenizer)
    origin = None  # the loaded model, where the run trains one derived from it (distill: the teacher)
    if objective.derive:
        origin, model = model, objective.derive(model, tokenizer, task, cfg, echo)
    with_safety(
        cost, cfg.eval, chat_model=objective.head == "causal" and bool(getattr(tokenizer, "chat_template", None))
    )
    laps("model_and_tokens")
    reference = reference_rows(encoder, cfg.eval.reference) if objective.head == "causal" else []
    ctx = MethodContext(total_steps=total_steps(task.train_count, cfg), base_path=base)
    model = (objective.attach or apply_method)(model, cfg, ctx)
    given = cfg  # config.yaml keeps the user's config as written (e.g. batch size auto)
    levers: dict[str, Any] = {}
    lines: list[str] = []
    if objective.tune:  # before the run folder: a batch that cannot fit the budget leaves nothing behind
        cfg, levers, lines = objective.tune(model, tokenizer, task, cfg, memory_budget)
    elif objective.lever_note:
        lines = [objective.lever_note.format(name=objective.name)]
    laps("method_and_plan")
    if ranks.is_main():
        if checkpoint:
            echo(f"resuming from {checkpoint} (same config, data and model as when the run started)")
            continue_run_folder(out, checkpoint_step(checkpoint))
        else:
            prepare_run_folder(out, overwrite)
        record["model"].update(loaded_identity(model, tokenizer))
        write_run_inputs(out, given, record, data)
    echo(summary(data.report))
    for line in [*task.lines, *lines, *(f"benchmark {name} skipped: {why}" for name, why in cost.skipped.items())]:
        echo(line)

    metrics: dict[str, Any] = {"objective": cfg.objective} if cfg.objective != "sft" else {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    costs: dict[str, dict[str, Any]] = {}  # benchmark scores and probe summaries, base and tuned
    probe_answers: dict[str, list[dict[str, Any]]] = {}
    # the method's layers are in place, switched off; rank 0 evaluates, the others wait
    with base_weights_only(model), ranks.main_first():
        first = origin or model  # what the tuned model is compared with: the base, or the model it was made from
        derived = objective.derived_row
        if cfg.eval.base and ranks.is_main():
            echo(f"evaluating the {'base' if origin is None else 'original'} model ...")
            metrics["base"], predictions["base"] = objective.measures(first, tokenizer, encoder, task, cfg, False)
            if origin is not None:
                echo(f"evaluating the {derived} model before training ...")
                metrics[derived], predictions[derived] = objective.measures(model, tokenizer, encoder, task, cfg, False)
        if reference and ranks.is_main():
            metrics["forgetting"] = {
                "reference": cfg.eval.reference,
                "threshold_percent": cfg.eval.forgetting_threshold,
            }
            metrics["forgetting"]["base_perplexity"] = _ppl(first, tokenizer, reference, cfg)
            if origin is not None:
                metrics["forgetting"][f"{derived}_perplexity"] = _ppl(model, tokenizer, reference, cfg)
        if cfg.eval.base and not cost.empty and ranks.is_main():
            echo("what tuning costs: " + cost.describe() + " on the base model ...")
            costs["base"], probe_answers["base"] = measure_cost(first, tokenizer, encoder.question_ids, cost, cfg.eval)
    laps("base_evaluation")
    trainable, total = count_parameters(model)
    echo(
        f"method: {cfg.method}, trainable params: {trainable:,} / {total:,} ({100 * trainable / total:.2f}%), "
        f"base weights in {dtype}"
    )
    echo("method settings: " + ", ".join(f"{k}={v}" for k, v in settings(cfg).items()))
    echo(f"training{'' if cfg.objective == 'sft' else f' ({cfg.objective} on TRL)'} ...")
    result = _train(objective, model, tokenizer, task, cfg, [*shared_callbacks(cfg, objective.name == "sft"),
                    *ctx.callbacks, *(callbacks or [])], checkpoint, echo)  # fmt: skip
    trainer = result.pop("trainer")
    if not (objective.save and objective.save(trainer, model, tokenizer, out)):
        save_weights(trainer, tokenizer, out)
    laps("training_and_save")
    del trainer  # the DDP wrapper and the optimizer go now, while the other ranks are still connected
    ranks.close()  # the ranks are done together; rank 0 evaluates and writes the rest alone
    if not ranks.is_main():
        return {}

    echo("evaluating the fine-tuned model ...")
    metrics["finetuned"], predictions["finetuned"] = objective.measures(model, tokenizer, encoder, task, cfg, True)
    if reference:
        f = metrics["forgetting"]
        f["finetuned_perplexity"] = _ppl(model, tokenizer, reference, cfg)
        # the forgetting figure: how much worse the model got at general text, in percent of perplexity
        f["perplexity_increase_percent"] = 100 * (f["finetuned_perplexity"] / f["base_perplexity"] - 1)
    if judge:
        echo(f"scoring answers with the reward model {cfg.eval.reward_model} ...")
        add_rewards(judge, metrics, predictions, cfg)
    if not cost.empty:
        echo("what tuning costs: " + cost.describe() + " on the fine-tuned model ...")
        costs["finetuned"], probe_answers["finetuned"] = measure_cost(model, tokenizer, encoder.question_ids, cost,
                                                                      cfg.eval)  # fmt: skip
    if not cost.empty or cost.skipped:  # a skipped benchmark is recorded too
        metrics.update(cost_metrics(costs.get("base"), costs.get("finetuned", {}), cost, cfg.eval))
    laps("final_evaluation")
    metrics["train_time_s"] = result.pop("train_time_s")
    for key in ("privacy", "distill"):  # top level: the privacy guarantee, the student's pruning and speed
        if key in result:
            metrics[key] = result.pop(key)
    metrics["run"] = {
        "model": cfg.model.name,
        "base_weights": base,
        **(
            {"objective": cfg.objective, "objective_settings": objective.settings(cfg)}
            if cfg.objective != "sft"
            else {}
        ),  # fmt: skip
        "method": cfg.method,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "method_settings": settings(cfg),
        "dtype": dtype,
        **levers,
        "train_examples": task.train_count,
        "global_batch": cfg.training.per_device_train_batch_size
        * result["world_size"]
        * cfg.training.gradient_accumulation_steps,
        "eval_examples": len(task.held_out),
        "held_out_cut": {k: v for k, v in data.report.get("overlong", {}).get("eval", {}).items() if k != "dropped"},
        "tasks": sorted(data.report["tasks"]),
        "eval_source": data.eval_source,
        **result,
        "resumed_from": checkpoint.name if checkpoint else None,
        "phases_s": laps.seconds,  # where the run's time went (the report is written after)
        "versions": record["versions"],
        "git_commit": (record["git"] or {}).get("commit"),
    }
    for name, rows in probe_answers.items():  # for review; the reports never show the probe's prompts
        atomic_write_jsonl(out / f"safety_{name}.jsonl", rows)
    return finish_run(out, cfg, metrics, predictions, judge is not None, echo)


class Laps:
    """Wall seconds of each part of a run, in order: ``laps("name")`` closes the part that ends here."""

    def __init__(self) -> None:
        self.last, self.seconds = time.perf_counter(), {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = round(now - self.last, 2), now


def _train(objective: Objective, model: Any, tokenizer: Any, task: Task, cfg: RunConfig, callbacks: list,
           checkpoint: Path | None, echo: Any) -> dict[str, Any]:  # fmt: skip
    """The objective's trainer, trained under lmtune's guards; the facts of the run and the trainer."""
    built = objective.trainer(model, tokenizer, task, cfg, callbacks, echo)
    try:
        facts = fit(built.trainer, checkpoint, built.autocast_adapters)
    finally:
        more = built.finish() if built.finish else {}
    return {**facts, **built.facts, **more, "trainer": built.trainer}


def _quiet(*args: Any, **kwargs: Any) -> None:
    """What ranks other than 0 print: nothing (rank 0 prints for the run)."""


def base_weights_only(model: Any) -> Any:
    """PEFT's ``disable_adapter()`` for an adapted model (the base's own outputs); nothing to switch off otherwise."""
    from contextlib import nullcontext

    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def finish_run(
    out: Path, cfg: RunConfig, metrics: dict, predictions: dict[str, list[dict]], judged: bool, echo: Any
) -> dict[str, Any]:
    """Metric settings into ``metrics``, then metrics.json, predictions and reports; print the table."""
    metrics["metric_settings"] = metric_settings(cfg.eval.stride)
    if judged:
        metrics["metric_settings"]["reward"] = {"model": cfg.eval.reward_model, **REWARD_SETTINGS}
    write_outputs(out, metrics, predictions)
    echo("")
    echo(text_table(metrics))
    for line in (privacy_line(metrics), forgetting_line(metrics)):
        if line:
            echo(line)
    echo(f"\nrun folder: {out}  (report: {out / 'report.html'})")
    return metrics


def write_run_inputs(out: Path, cfg: RunConfig, record: dict[str, Any], data: TaskData) -> None:
    """What the run starts from: run record, resolved config, data report, the test split."""
    atomic_write_json(out / RECORD, record)
    atomic_write_text(out / "config.yaml", config_text(cfg))
    write_data_report(out / DATA_REPORT, data.report)
    if data.test:
        atomic_write_jsonl(out / "test.jsonl", [example_row(ex) for ex in data.test])


def loaded_identity(model: Any, tokenizer: Any) -> dict[str, Any]:
    """What only the loaded model tells: the hub revision (when from the hub) and the tokenizer's digest."""
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"tokenizer_sha256": tokenizer_digest(tokenizer), **({"revision": revision} if revision else {})}


def add_rewards(judge: tuple[Any, Any], metrics: dict, predictions: dict[str, list[dict]], cfg: RunConfig) -> None:
    """Reward-model scores of every generated answer: per row, summarised per model, and base vs fine-tuned."""
    scores = {}
    for name, rows in predictions.items():
        if not rows:
            continue
        scores[name] = reward_scores(*judge, [r["prompt"] for r in rows], [r["prediction"] for r in rows],
                                     cfg.eval.reward_batch_size)  # fmt: skip
        for row, score in zip(rows, scores[name], strict=True):
            row["reward"] = score
        metrics[name]["reward"] = {"model": cfg.eval.reward_model, **reward_summary(scores[name])}
    if "base" in scores and "finetuned" in scores:
        metrics["reward_comparison"] = compare_rewards(scores["base"], scores["finetuned"])


def _ppl(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: RunConfig) -> float:
    return perplexity(model, rows, tokenizer.pad_token_id, cfg.eval.batch_size)["perplexity"]


def write_outputs(out: Path, metrics: dict[str, Any], predictions: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in predictions.items():
        if rows:  # none when only perplexity was asked for
            atomic_write_jsonl(out / f"predictions_{name}.jsonl", rows)
    atomic_write_json(out / "metrics.json", metrics)  # last: a metrics.json marks the run finished
    write_reports(out)  # report.md and report.html, from the files just written


def example_row(ex: Example) -> dict[str, Any]:
    """An example back as a row lmtune reads (``messages`` or ``text``), with its task and origin."""
    if ex.text is not None:
        body: dict[str, Any] = {"text": ex.text}
    elif ex.rejected is not None:  # a pair reads back as the preference shape
        body = {"prompt": list(ex.prompt_messages), "chosen": ex.references[0], "rejected": ex.rejected}
    elif ex.label is not None:
        body = {"prompt": list(ex.prompt_messages), "completion": ex.references[0], "label": ex.label}
    elif not ex.messages or ex.messages[-1]["role"] != "assistant":  # prompt_only, with its columns
        body = {"prompt": list(ex.messages), **ex.extras}
    else:  # a grouped example keeps every answer: a list in the last turn reads back as references
        last = ex.messages[-1] if len(ex.references) <= 1 else {**ex.messages[-1], "content": list(ex.references)}
        body = {"messages": [*ex.messages[:-1], last]}
    return {**body, "task": ex.task, "source": ex.source}
