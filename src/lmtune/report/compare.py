"""Several run folders side by side: one table and one plot of their loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError
from lmtune.files import atomic_write, atomic_write_text
from lmtune.report import plots
from lmtune.report.run import Run, load_run
from lmtune.report.tables import aligned, markdown_rows, value

LORA_FAMILY = ("lora", "dora", "qlora")
# (header, path into the fine-tuned metrics, format); the optional ones appear when any run has them
SCORES = (("PPL", "perplexity", ".3f"), ("BLEU", "bleu.bleu", ".4f"), ("ROUGE-L", "rouge.rougeL", ".4f"))
OPTIONAL_SCORES = (("chrF", "chrf.chrf", ".4f"), ("token F1", "token_f1", ".4f"))


def compare_runs(folders: list[Path], output: Path | None = None) -> str:
    """A table of several runs (settings, training, fine-tuned scores, forgetting), as aligned text.

    Args:
        folders: run folders, each holding a ``metrics.json``.
        output: when given, ``compare.md`` (the table in Markdown) and ``compare_loss.png``
            (every run's training loss, eval loss dashed; a note where no run has a log) are written into it.

    Raises:
        ConfigError: a folder is not a run folder (no ``metrics.json``).
    """
    if not folders:
        raise ConfigError("compare: give at least one run folder")
    for folder in folders:
        if not (Path(folder) / "metrics.json").is_file():
            raise ConfigError(f"{folder}: not a run folder (no metrics.json in it)")
    runs = [load_run(Path(f)) for f in folders]
    names = run_names(runs)
    rows = compare_rows(runs, names)
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "compare.md", markdown_rows(rows) + "\n")
        series = [(name, [r for _, part in run.series() for r in part]) for name, run in zip(names, runs, strict=True)]
        png = plots.loss_curves(series, title="Training loss (dashed: eval loss)")
        png = png or plots.note("no training log (train_log.jsonl) in these runs")
        atomic_write(output / "compare_loss.png", lambda f: f.write(png))
    return aligned(rows)


def run_names(runs: list[Run]) -> list[str]:
    """Each run's folder name; the path as given where two folders share a name."""
    short = [run.name for run in runs]
    return [s if short.count(s) == 1 else str(run.folder) for s, run in zip(short, runs, strict=True)]


def compare_rows(runs: list[Run], names: list[str]) -> list[list[str]]:
    """The header and one row per run; LoRA rank, chrF and token F1 only when some run has them."""
    lora = any(_method(r) in (*LORA_FAMILY, "adalora") for r in runs)
    optional = [s for s in OPTIONAL_SCORES if any(value(r.metrics.get("finetuned"), s[1]) is not None for r in runs)]
    header = ["Run", "Method", "LR", "Budget", *(["LoRA r"] if lora else []), "Steps", "Time (s)"]
    header += [s[0] for s in (*SCORES, *optional)] + ["Forgetting"]
    rows = [header]
    for name, run in zip(names, runs, strict=True):
        m, training = run.metrics, run.config.get("training") or {}
        row = [name, _method(run) or "-", _fmt(value(training, "learning_rate"), "g"), _budget(training)]
        row += [_rank(run)] if lora else []
        row += [_fmt(_steps(m), "d"), _fmt(value(m, "train_time_s"), ".1f")]
        row += [_fmt(value(m.get("finetuned"), path), fmt) for _, path, fmt in (*SCORES, *optional)]
        pct = value(m.get("forgetting"), "perplexity_increase_percent")
        rows.append([*row, "-" if pct is None else f"{pct:+.1f}%"])
    return rows


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return "-"
    return format(int(x), spec) if spec == "d" else format(x, spec)


def _method(run: Run) -> str | None:
    m = (run.metrics.get("run") or {}).get("method") or run.config.get("method")
    return str(m) if m else None


def _budget(training: dict[str, Any]) -> str:
    steps, epochs = value(training, "max_steps"), value(training, "num_train_epochs")
    if steps is not None and steps > 0:
        return f"{int(steps)} steps"
    return "-" if epochs is None else f"{epochs:g} epoch" + ("" if epochs == 1 else "s")


def _rank(run: Run) -> str:
    method, cfg = _method(run), run.config
    if method in LORA_FAMILY:
        return _fmt(value(cfg.get("lora"), "r"), "d")
    if method == "adalora":
        a = cfg.get("adalora") or {}
        return f"{a.get('init_r', '?')}→{a.get('target_r', '?')}"
    return "-"


def _steps(m: dict[str, Any]) -> float | None:
    steps = value(m.get("run"), "steps")
    if steps is None and m.get("stages"):  # a staged run: the stages' steps together
        found = [value(s.get("run"), "steps") for s in m["stages"]]
        steps = sum(found) if all(s is not None for s in found) else None
    return steps
