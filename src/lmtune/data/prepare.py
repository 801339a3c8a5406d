"""Task data for a run: read every source, clean, split, mix, tokenise, report.

``load_task_data`` works on text only (fast, before any model is loaded), so bad
data fails early; ``tokenize_task_data`` applies the token-length limit with the
model's tokenizer.  Both feed one data report (``data_report.json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.config import DataConfig
from lmtune.data import clean as C
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import Example, read_examples
from lmtune.data.held_out import encode_held_out
from lmtune.data.preference import PREFERENCE_SHAPES
from lmtune.data.split import count_prompts, group_references, mix, split
from lmtune.errors import DataError

Row = dict[str, Any]  # {"input_ids": int32 array, "labels": int32 array}


@dataclass
class TaskData:
    train: list[Example]
    eval: list[Example]
    test: list[Example]
    shape: str
    eval_source: str  # the file(s), or "N% of <train> (seed S)"
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tokenized:
    train: list[Row]
    eval: list[Row]
    # every held-out example: none is dropped for its length (`lmtune.data.held_out` cuts its row instead)
    eval_examples: list[Example]
    # eval_owner[j]: the index in eval_examples of eval row j (an example has a row per reference)
    eval_owner: list[int]


def load_task_data(cfg: DataConfig, seed: int) -> TaskData:
    """Read, clean, split and mix the ``data`` section's sources (no tokenizer needed)."""
    report: dict[str, Any] = {"sources": [], "splits": {}}
    train_parts, val_parts, test_parts, weights = [], [], [], []
    shape = ""
    stratified = []
    for src in cfg.sources("train"):
        rows, shape_i, entry = _read_clean(src, cfg)
        if shape and _preference_mix(shape_i, shape):
            raise _shape_mismatch(src.path, shape_i, shape, "the first training source's")
        shape = shape or shape_i
        held = (cfg.val_fraction if not cfg.eval else 0.0, cfg.test_fraction)
        strat = cfg.stratify == "yes" or (cfg.stratify == "auto" and C.is_classification_like(rows))
        val, test, rest = split(rows, held, seed, stratify=strat, by_prompt=cfg.split_by == "prompt")
        entry.update(train=len(rest), validation=len(val), test=len(test), stratified=strat)
        stratified.append(strat)
        report["sources"].append(entry)
        train_parts.append(rest)
        val_parts.append(val)
        test_parts.append(test)
        weights.append(src.weight)
    if cfg.eval:
        held_out: list[Example] = []
        train_sources = cfg.sources("train")
        for src in cfg.sources("eval"):
            if src.task is None and len(train_sources) == 1:  # one task: held-out rows belong to it
                src = src.model_copy(update={"task": train_sources[0].task or Path(train_sources[0].path).stem})
            rows, shape_i, entry = _read_clean(src, cfg, role="eval")
            if (shape_i == "text") != (shape == "text") or _preference_mix(shape_i, shape):
                raise _shape_mismatch(src.path, shape_i, shape, "the training data's")
            report["sources"].append(entry)
            held_out += rows
        eval_source = ", ".join(s.path for s in cfg.sources("eval"))
    else:
        held_out = [ex for part in val_parts for ex in part]
        eval_source = f"{cfg.val_fraction:.0%} of {_names(cfg)} (seed {seed})"
    test = [ex for part in test_parts for ex in part]
    train = mix(train_parts, weights, seed)
    all_train = [ex for part in train_parts for ex in part]
    contamination = {"eval": 0, "test": 0}
    if cfg.decontaminate:
        held_out, contamination["eval"] = C.drop_contaminated(held_out, all_train)
        test, contamination["test"] = C.drop_contaminated(test, all_train)
    if not train:
        raise DataError(f"data.train: no training rows left after cleaning ({_names(cfg)})")
    if not held_out:
        raise _no_held_out(cfg, all_train)
    report["contamination_dropped"] = contamination
    report["split_by"] = cfg.split_by
    report["groups"] = {
        "train": {"rows": len(train), "prompts": count_prompts(train)},
        "eval": {"rows": len(held_out), "prompts": count_prompts(held_out)},
        "test": {"rows": len(test), "prompts": count_prompts(test)},
    }
    if shape in PREFERENCE_SHAPES:
        report["preference"] = {
            name: _preference_counts(part) for name, part in (("train", train), ("eval", held_out), ("test", test))
        }
    if cfg.split_by == "prompt":  # one example per held-out prompt, its answers the references (not for pairs)
        held_out, test = group_references(held_out), group_references(test)
    report["splits"] = {"train": len(train), "eval": len(held_out), "test": len(test)}
    report["tasks"] = dict(Counter(ex.task for ex in train))
    report["mixture"] = {s.task or Path(s.path).stem: s.weight for s in cfg.sources("train")}
    report["classification_like"] = C.is_classification_like(all_train)
    if report["classification_like"]:
        report["class_balance"] = dict(C.answer_counts(all_train).most_common())
    return TaskData(train, held_out, test, shape, eval_source, report)


def _preference_mix(shape_i: str, shape: str) -> bool:
    return (shape_i in PREFERENCE_SHAPES) != (shape in PREFERENCE_SHAPES)


def _shape_mismatch(path: str, shape_i: str, shape: str, whose: str) -> DataError:
    why = ""
    if _preference_mix(shape_i, shape):
        why = " (preference data, pairs or labelled answers, cannot be mixed with other shapes)"
    return DataError(f"{path}: shape '{shape_i}' does not match {whose} '{shape}'{why}")


def _preference_counts(examples: list[Example]) -> dict[str, int]:
    """Pairs, and KTO answers labelled desirable / undesirable (only the counts that are not zero)."""
    counts = {
        "pairs": sum(ex.is_preference for ex in examples),
        "desirable": sum(ex.label is True for ex in examples),
        "undesirable": sum(ex.label is False for ex in examples),
    }
    return {k: v for k, v in counts.items() if v}


def _no_held_out(cfg: DataConfig, train: list[Example]) -> DataError:
    if cfg.eval or not cfg.val_fraction:
        return DataError("no held-out rows: give data.eval, or a data.val_fraction above 0")
    prompts = count_prompts(train)
    if cfg.split_by == "prompt" and round(prompts * cfg.val_fraction) == 0:
        shared = (
            f"; {len(train)} rows share {prompts} prompt(s) and a prompt's rows stay together "
            "(data.split_by: row splits them one by one)"
            if len(train) > prompts
            else ""
        )
        return DataError(
            f"no held-out rows: data.val_fraction {cfg.val_fraction} of {prompts} distinct prompt(s) rounds to "
            f"none; give data.eval or raise data.val_fraction{shared}"
        )
    return DataError("no held-out rows left after decontamination: give data.eval (prompts not in data.train)")


def check_enough_examples(n_train: int, cfg: Any) -> None:
    """At least one full batch of training examples (``cfg`` is the RunConfig)."""
    batch = cfg.training.per_device_train_batch_size
    batch = 1 if batch == "auto" else batch  # auto can go down to one example per step
    if n_train < batch:
        raise DataError(
            f"data.train: {n_train} training example{'s' if n_train != 1 else ''} left after cleaning, splitting "
            f"and the length limit, fewer than one batch (training.per_device_train_batch_size: {batch}); "
            "add data or lower the batch size"
        )


def _names(cfg: DataConfig) -> str:
    return ", ".join(s.path for s in cfg.sources("train"))


def _read_clean(src: Any, cfg: DataConfig, role: str = "train") -> tuple[list[Example], str, dict[str, Any]]:
    path = Path(src.path)
    if not path.exists() and (path.suffix or src.path.startswith((".", "/", "~"))):
        key = "data.train" if role == "train" else "data.eval"
        raise DataError(f"{key}: {src.path}: no such file (relative paths start from the current folder)")
    ds = read_examples(src.path, src.format, src.columns, src.task, src.split, src.subset)
    kept, dropped = C.clean(ds.examples, cfg.normalize, cfg.dedup, cfg.near_dedup, cfg.near_dedup_threshold)
    entry = {
        "path": src.path,
        "role": role,
        "task": kept[0].task if kept else src.task,
        "format": ds.shape,
        "rows_read": len(ds.examples),
        "dropped": dict(dropped),
        "kept": len(kept),
    }
    return kept, ds.shape, entry


# --------------------------------------------------------------------------- tokenising


def tokenize_task_data(encoder: Encoder, data: TaskData, overlong: str) -> Tokenized:
    """Encode train and held-out rows; apply the length limit; add token statistics to the report.

    ``overlong`` applies to the training rows only: every held-out example is kept and scored (see
    `lmtune.data.held_out`), so the before/after comparison is always on the whole held-out set.
    """
    train_rows, _, train_cut = encode_all(encoder, data.train, overlong)
    if not train_rows or not any((r["labels"] != IGNORE).any() for r in train_rows):
        raise _too_long(encoder, data.train, "training example keeps an answer token")
    eval_rows, eval_owner, eval_cut = encode_held_out(encoder, data.eval)
    data.report["overlong"] = {
        "policy": overlong,
        "max_length": encoder.max_length,
        "train": train_cut,
        "eval": eval_cut,
    }
    data.report["tokens"] = token_statistics(train_rows)
    data.report["warnings"] = warnings_for(data.report)
    return Tokenized(train_rows, eval_rows, data.eval, eval_owner)


def _too_long(encoder: Encoder, examples: list[Example], what: str) -> DataError:
    lengths = [len(encoder.encode(ex, truncate=False)["input_ids"]) for ex in examples]
    span = f"{min(lengths)}" if min(lengths) == max(lengths) else f"{min(lengths)} to {max(lengths)}"
    return DataError(
        f"data.max_length: {encoder.max_length} tokens, and no {what} (examples have {span} tokens); "
        f"raise data.max_length to at least {min(lengths)}"
    )


def encode_all(
    encoder: Encoder, examples: list[Example], overlong: str = "truncate"
) -> tuple[list[Row], list[Example], dict[str, int]]:
    """(rows, the examples they came from, what ``overlong`` did to the rows longer than ``max_length``)."""
    rows: list[Row] = []
    kept: list[Example] = []
    cut = {"dropped": 0, "truncated": 0, "tokens_cut": 0}
    for ex in examples:
        enc = encoder.encode(ex, truncate=False)
        extra = len(enc["input_ids"]) - encoder.max_length
        if extra > 0:
            if overlong == "drop":
                cut["dropped"] += 1
                continue
            enc = {k: v[: encoder.max_length] for k, v in enc.items()}
            if all(label == IGNORE for label in enc["labels"]):  # the cut took the whole answer
                cut["dropped"] += 1
                continue
            cut["truncated"] += 1
            cut["tokens_cut"] += extra
        # int32 arrays: a quarter of the memory of Python int lists
        rows.append({k: np.asarray(v, dtype=np.int32) for k, v in enc.items()})
        kept.append(ex)
    return rows, kept, cut


def token_statistics(rows: list[Row]) -> dict[str, Any]:
    lengths = np.array([len(r["input_ids"]) for r in rows])
    answers = np.array([int((r["labels"] != IGNORE).sum()) for r in rows])
    return {
        "total": int(lengths.sum()),
        "trained": int(answers.sum()),
        "length": _quantiles(lengths),
        "answer_length": _quantiles(answers),
        "histogram": _histogram(lengths),
    }


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.5, 0.9, 0.99])
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 1),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": int(values.max()),
    }


def _histogram(values: np.ndarray, bins: int = 10) -> list[dict[str, int]]:
    counts, edges = np.histogram(values, bins=bins)
    return [{"from": int(edges[i]), "to": int(edges[i + 1]), "count": int(c)} for i, c in enumerate(counts)]


def warnings_for(report: dict[str, Any]) -> list[str]:
    """Warnings from common fine-tuning guidance; nothing here stops a run."""
    out = []
    n_train = report["splits"]["train"]
    if report.get("classification_like"):
        small = {k: v for k, v in report.get("class_balance", {}).items() if v < 100}
        if small:
            out.append(
                f"{len(small)} class(es) have fewer than 100 examples (e.g. {next(iter(small))!r}: "
                f"{next(iter(small.values()))}); classifiers usually need ~100+ per class"
            )
    elif n_train < 1000:
        out.append(f"{n_train} training examples; generation tasks usually want ~1,000 or more")
    for split_name, n in report.get("contamination_dropped", {}).items():
        if n:
            out.append(f"{n} {split_name} row(s) had a prompt that is also in the training data and were dropped")
    for src in report["sources"]:
        lost = sum(src["dropped"].values())
        if src["rows_read"] and lost / src["rows_read"] > 0.2:
            out.append(f"{src['path']}: cleaning dropped {lost} of {src['rows_read']} rows ({dict(src['dropped'])})")
    over = report.get("overlong", {})
    train = over.get("train", {})
    if train.get("dropped") or train.get("truncated"):
        out.append(
            f"train: {train['dropped']} row(s) dropped and {train['truncated']} truncated at "
            f"data.max_length={over['max_length']} (data.overlong: {over['policy']})"
        )
    if over.get("eval", {}).get("cut"):
        out.append(
            f"eval: {_prompt_cuts(over['eval'])} to fit data.max_length={over['max_length']}; "
            "raise data.max_length to score those examples whole"
        )
    return out


def _prompt_cuts(counts: dict[str, int]) -> str:
    """``5 cut from the middle of the prompt (mean 41, max 97 tokens)``, or ``0 cut``."""
    n = counts.get("cut", 0)
    if not n:
        return "0 cut"
    mean = round(counts["tokens_cut"] / n)
    return f"{n} cut from the middle of the prompt (mean {mean}, max {counts['max_tokens_cut']} tokens)"


def _splits_line(report: dict[str, Any]) -> str:
    """``splits (by prompt): train 994 rows / 118 prompts, eval 470 rows / 50 prompts -> 50 examples, ...``."""
    s, groups = report["splits"], report.get("groups")
    if not groups:  # a report written before groups were counted
        return f"splits: train {s['train']}, eval {s['eval']}, test {s['test']}"
    by = f"splits (by {report.get('split_by', 'row')}): "
    if all(g["rows"] == g["prompts"] for g in groups.values()):
        return by + f"train {s['train']}, eval {s['eval']}, test {s['test']} (one row per prompt)"
    parts = []
    for name in ("train", "eval", "test"):
        g = groups[name]
        text = f"{name} {g['rows']:,} rows / {g['prompts']:,} prompts"
        if name != "train" and s[name] != g["rows"]:
            text += f" -> {s[name]:,} examples (answers grouped as references)"
        parts.append(text)
    return by + ", ".join(parts)


def summary(report: dict[str, Any]) -> str:
    """A short human summary of a data report."""
    lines = []
    for src in report["sources"]:
        dropped = ", ".join(f"{k} {v}" for k, v in src["dropped"].items() if v) or "none"
        lines.append(
            f"{src['path']} ({src['role']}, {src['format']}, task {src['task']}): "
            f"{src['rows_read']} read, {src['kept']} kept; dropped: {dropped}"
        )
    lines.append(_splits_line(report))
    if report.get("preference"):
        lines.append(
            "preference: "
            + ", ".join(
                f"{name} " + (" / ".join(f"{v:,} {k}" for k, v in counts.items()) or "none")
                for name, counts in report["preference"].items()
            )
        )
    c = report.get("contamination_dropped", {})
    lines.append(f"contamination: {c.get('eval', 0)} eval and {c.get('test', 0)} test rows dropped")
    if len(report.get("tasks", {})) > 1:
        lines.append("tasks in training: " + ", ".join(f"{k} {v}" for k, v in report["tasks"].items()))
    if report.get("class_balance"):
        lines.append("classes: " + ", ".join(f"{k!r} {v}" for k, v in list(report["class_balance"].items())[:10]))
    tok = report.get("tokens")
    if tok:
        q, a = tok["length"], tok["answer_length"]
        lines.append(
            f"tokens per example: min {q['min']}, p50 {q['p50']:.0f}, p90 {q['p90']:.0f}, "
            f"p99 {q['p99']:.0f}, max {q['max']}; answer tokens p50 {a['p50']:.0f}, max {a['max']}"
        )
        peak = max(b["count"] for b in tok["histogram"]) or 1
        for b in tok["histogram"]:
            lines.append(f"  {b['from']:>6}-{b['to']:<6} {'#' * round(30 * b['count'] / peak)} {b['count']}")
        o = report["overlong"]
        tr, ev = o["train"], o["eval"]
        lines.append(
            f"over max_length={o['max_length']} ({o['policy']}): train {tr['dropped']} dropped / "
            f"{tr['truncated']} truncated, eval {ev['dropped']} dropped / {_prompt_cuts(ev)}"
            + (f" / {ev['sliding_window']} scored by sliding window" if ev.get("sliding_window") else "")
        )
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
