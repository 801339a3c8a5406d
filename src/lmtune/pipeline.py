"""``lmtune train``: data -> model -> base eval -> method -> Trainer -> save -> eval -> report.

Stages talk through files in the run folder (``training.output_dir``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmtune.build import apply_speed_levers, load_for_training
from lmtune.config import RunConfig, dump_config
from lmtune.data.cache import tokenize_cached, tokenizer_digest
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.general import reference_examples
from lmtune.data.prepare import TaskData, check_enough_examples, summary
from lmtune.evaluate.perplexity import perplexity
from lmtune.evaluate.reward import REWARD_SETTINGS, compare_rewards, load_reward_model, reward_scores, reward_summary
from lmtune.evaluate.run import evaluate_model, metric_settings
from lmtune.files import TMP_PREFIX, atomic_write_json, atomic_write_jsonl, atomic_write_text, fsync_folder, fsync_tree
from lmtune.launch import ranks
from lmtune.methods import MethodContext, apply_method, count_parameters, settings
from lmtune.methods.continual import ewc_penalty, fisher_diagonal, replay_rows
from lmtune.plan import AUTO_GLOBAL_BATCH, make_plan, with_batch
from lmtune.preflight import preflight, refuse_distributed
from lmtune.provenance import RECORD
from lmtune.report import forgetting_line, privacy_line, text_table, write_reports
from lmtune.run_folder import DATA_REPORT, checkpoint_step, continue_run_folder, prepare_run_folder
from lmtune.train import train

logger = logging.getLogger(__name__)


def finetune(
    cfg: RunConfig,
    overwrite: bool = False,
    resume: bool = False,
    echo: Any = print,
    memory_budget: int | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; returns the contents of ``metrics.json``.

    ``callbacks`` (``transformers.TrainerCallback``) join the Trainer's own, e.g. ``lmtune sweep``'s pruner.

    Everything that can be checked is checked before the run folder is created, so a bad
    config, data file or model name leaves nothing behind.  An unfinished run of the same
    config and data in ``training.output_dir`` resumes from its latest committed checkpoint.
    """
    if cfg.objective != "sft":
        from lmtune.objectives.run import finetune_objective

        refuse_distributed(f"objective: {cfg.objective}")
        return finetune_objective(cfg, overwrite=overwrite, resume=resume, echo=echo)
    if cfg.privacy is not None:
        refuse_distributed("privacy")
    ranks.init()
    out = Path(cfg.training.output_dir)
    checked = preflight(cfg, overwrite, resume)
    data, record, checkpoint = checked.data, checked.record, checked.checkpoint
    judge = load_reward_model(cfg.eval.reward_model) if cfg.eval.reward_model else None
    ranks.barrier()  # every rank has checked the run folder before rank 0 changes it
    if not ranks.is_main():
        echo = _quiet

    from transformers import set_seed

    set_seed(cfg.seed)
    with ranks.main_first():  # rank 0 converts a GGUF model and writes the token cache; the others read them
        model, tokenizer, base, dtype = load_for_training(cfg)
        d = cfg.data
        encoder = Encoder(tokenizer, d.template, d.system_prompt, d.max_length, d.train_on_prompt)
        tokens, cached = tokenize_cached(encoder, data, d, cfg.seed)
    train_rows, eval_rows, eval_examples = tokens.train, tokens.eval, tokens.eval_examples
    eval_owner = tokens.eval_owner
    check_enough_examples(len(train_rows), cfg)
    reference = reference_rows(encoder, cfg.eval.reference)
    regular = reference_rows(encoder, cfg.continual.reference)
    fraction = cfg.continual.replay_fraction
    replayed = replay_rows(regular, len(train_rows), fraction) if fraction else []
    train_rows = train_rows + replayed
    ctx = MethodContext(total_steps=total_steps(len(train_rows), cfg), base_path=base)
    model = apply_method(model, cfg, ctx)
    given = cfg  # config.yaml keeps the user's config as written (e.g. batch size auto)
    levers = apply_speed_levers(model, cfg, train_rows)
    if cfg.training.plan:  # before the run folder: a batch that cannot fit the budget leaves nothing behind
        # rank 0 plans for one process (its memory, its share of the tokens); every rank takes its batch size
        plan = ranks.broadcast(make_plan(model, tokenizer, train_rows, eval_rows, cfg, memory_budget)
                               if ranks.is_main() else None)  # fmt: skip
        cfg = with_batch(cfg, plan.batch, plan.accumulation)
        levers["plan"] = plan.facts()
    if ranks.is_main():
        if checkpoint:
            echo(f"resuming from {checkpoint} (same config, data and model as when the run started)")
            continue_run_folder(out, checkpoint_step(checkpoint))
        else:
            prepare_run_folder(out, overwrite)
        record["model"].update(loaded_identity(model, tokenizer))
        write_run_inputs(out, given, record, data)
    echo(summary(data.report))
    echo(
        f"data: {len(train_rows) - len(replayed)} train / {len(eval_examples)} held-out examples "
        f"({data.shape}, {encoder.template} layout{', tokens from cache' if cached else ''})"
    )
    if replayed:
        echo(f"replay: {len(replayed)} rows of {cfg.continual.reference} mixed into the training data")
    if cfg.training.plan:
        echo(plan.table())

    metrics: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    # the method's layers are in place, switched off; rank 0 evaluates, the others wait
    with base_weights_only(model), ranks.main_first():
        if cfg.eval.base and ranks.is_main():
            echo("evaluating the base model ...")
            metrics["base"], predictions["base"] = _evaluate(model, tokenizer, encoder, eval_examples, eval_rows,
                                                             eval_owner, cfg)  # fmt: skip
        if reference and ranks.is_main():
            metrics["forgetting"] = {
                "reference": cfg.eval.reference,
                "threshold_percent": cfg.eval.forgetting_threshold,
            }
            metrics["forgetting"]["base_perplexity"] = _ppl(model, tokenizer, reference, cfg)
    penalty = None
    if cfg.continual.ewc_weight:
        fisher = fisher_diagonal(model, regular[: cfg.continual.ewc_samples], tokenizer.pad_token_id)
        penalty = ewc_penalty(model, fisher, cfg.continual.ewc_weight)
        echo(
            f"EWC: Fisher information from {min(len(regular), cfg.continual.ewc_samples)} reference rows, "
            f"weight {cfg.continual.ewc_weight}"
        )
    trainable, total = count_parameters(model)
    echo(
        f"method: {cfg.method}, trainable params: {trainable:,} / {total:,} ({100 * trainable / total:.2f}%), "
        f"base weights in {dtype}"
    )
    echo("method settings: " + ", ".join(f"{k}={v}" for k, v in settings(cfg).items()))
    echo("training ...")
    result = train(
        model,
        tokenizer,
        train_rows,
        eval_rows,
        cfg,
        callbacks=[*ctx.callbacks, *(callbacks or [])],
        penalty=penalty,
        generation_score=lambda m: _generation_scores(m, tokenizer, encoder, eval_examples, cfg),
        resume_from=checkpoint,
    )
    trainer = result.pop("trainer")
    save_weights(trainer, tokenizer, out)
    if not ranks.is_main():  # rank 0 evaluates and writes the rest; the others are done
        ranks.close()
        return {}

    echo("evaluating the fine-tuned model ...")
    metrics["finetuned"], predictions["finetuned"] = _evaluate(
        model, tokenizer, encoder, eval_examples, eval_rows, eval_owner, cfg
    )
    if reference:
        f = metrics["forgetting"]
        f["finetuned_perplexity"] = _ppl(model, tokenizer, reference, cfg)
        # the forgetting figure: how much worse the model got at general text, in percent of perplexity
        f["perplexity_increase_percent"] = 100 * (f["finetuned_perplexity"] / f["base_perplexity"] - 1)
    if judge:
        echo(f"scoring answers with the reward model {cfg.eval.reward_model} ...")
        add_rewards(judge, metrics, predictions, cfg)
    metrics["train_time_s"] = result["train_time_s"]
    if "privacy" in result:  # top level: the guarantee is about the whole run, next to what it cost
        metrics["privacy"] = result.pop("privacy")
    metrics["run"] = {
        "model": cfg.model.name,
        "base_weights": base,
        "method": cfg.method,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "method_settings": settings(cfg),
        "dtype": dtype,
        **levers,
        "train_examples": len(train_rows),
        "world_size": result["world_size"],
        "global_batch": cfg.training.per_device_train_batch_size
        * result["world_size"]
        * cfg.training.gradient_accumulation_steps,
        "eval_examples": len(eval_examples),
        "tasks": sorted(data.report["tasks"]),
        "eval_source": data.eval_source,
        **{k: v for k, v in result.items() if k != "train_time_s"},
        "resumed_from": checkpoint.name if checkpoint else None,
        "versions": record["versions"],
        "git_commit": (record["git"] or {}).get("commit"),
    }
    done = finish_run(out, cfg, metrics, predictions, judge is not None, echo)
    ranks.close()
    return done


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
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    write_data_report(out / DATA_REPORT, data.report)
    if data.test:
        atomic_write_jsonl(out / "test.jsonl", [example_row(ex) for ex in data.test])


def loaded_identity(model: Any, tokenizer: Any) -> dict[str, Any]:
    """What only the loaded model tells: the hub revision (when from the hub) and the tokenizer's digest."""
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"tokenizer_sha256": tokenizer_digest(tokenizer), **({"revision": revision} if revision else {})}


def save_weights(trainer: Any, tokenizer: Any, out: Path) -> None:
    """The adapter (PEFT) or full model, as safetensors, and the tokenizer, into ``out``."""

    def write(staging: Path) -> None:
        trainer.save_model(str(staging))
        if not ranks.is_main():
            return
        tokenizer.save_pretrained(staging)
        # Trainer pickles its arguments next to the weights; config.yaml already holds them, and a run
        # folder that others load should hold no pickle files
        (staging / "training_args.bin").unlink(missing_ok=True)

    save_into(out, write)


def save_into(out: Path, write: Any) -> None:
    """``write(folder)`` into a temporary folder inside ``out``, flushed, then renamed in file by file,
    so a kill mid-save never leaves a half-written weights file.

    Under several processes every rank calls ``write`` on rank 0's folder (a sharded model is gathered
    by all of them; Trainer writes from rank 0) and rank 0 alone moves the files in.
    """
    staging = Path(ranks.broadcast(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out) if ranks.is_main() else None))
    try:
        write(staging)
        ranks.barrier()
        if ranks.is_main():
            fsync_tree(staging)
            for path in staging.iterdir():
                os.replace(path, out / path.name)
            fsync_folder(out)
    finally:
        if ranks.is_main():
            shutil.rmtree(staging, ignore_errors=True)


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


def _generation_scores(model: Any, tokenizer: Any, encoder: Encoder, examples: list, cfg: RunConfig) -> dict:
    """The generation metrics on ``eval.generate_samples`` held-out rows, as flat numbers for the log."""
    e = cfg.eval
    wanted = [m for m in e.metrics if m != "perplexity"]
    result, _ = evaluate_model(
        model, tokenizer, encoder, examples, wanted, e.generate_samples, e.max_new_tokens, e.batch_size
    )
    return flat_scores(result)


def flat_scores(result: dict[str, Any]) -> dict[str, float]:
    """``{"bleu": {"bleu": .4, ...}, "rouge": {...}}`` -> ``{"bleu": .4, "rouge1": ..., "rougeL": ...}``."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, (int, float)) and key != "eval_time_s":
            flat[key] = value
        elif key == "bleu":
            flat["bleu"] = value["bleu"]
        elif key in ("rouge", "chrf"):
            flat.update(value)
    return flat


def reference_rows(encoder: Encoder, reference: str | None) -> list[dict[str, Any]]:
    return [encoder.encode(ex) for ex in reference_examples(reference)] if reference else []


def _ppl(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: RunConfig) -> float:
    return perplexity(model, rows, tokenizer.pad_token_id, cfg.eval.batch_size)["perplexity"]


def total_steps(n_train: int, cfg: RunConfig) -> int:
    """Optimizer steps the run will take (as Trainer counts them, each process taking its share of a batch)."""
    t = cfg.training
    if t.max_steps > 0:
        return t.max_steps
    batch = t.per_device_train_batch_size
    per_step = (AUTO_GLOBAL_BATCH if batch == "auto" else batch) * ranks.world_size()  # auto keeps this global batch
    batches = math.ceil(n_train / per_step)
    per_epoch = max(batches // t.gradient_accumulation_steps, 1)
    return math.ceil(per_epoch * t.num_train_epochs)


def _evaluate(
    model: Any, tokenizer: Any, encoder: Encoder, examples: list, rows: list, owner: list[int], cfg: RunConfig
) -> tuple[dict, list]:
    e = cfg.eval
    return evaluate_model(
        model,
        tokenizer,
        encoder,
        examples,
        e.metrics,
        e.max_samples,
        e.max_new_tokens,
        e.batch_size,
        encoded=rows,
        stride=e.stride,
        owner=owner,
    )


def write_outputs(out: Path, metrics: dict[str, Any], predictions: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in predictions.items():
        if rows:  # none when only perplexity was asked for
            atomic_write_jsonl(out / f"predictions_{name}.jsonl", rows)
    atomic_write_json(out / "metrics.json", metrics)  # last: a metrics.json marks the run finished
    write_reports(out)  # report.md and report.html, from the files just written


def write_data_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write_json(path, {"lmtune_data_report": 1, **report})


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
