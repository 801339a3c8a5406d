"""A run as one self-contained HTML page: f-strings, every value through ``html.escape``.

The page loads nothing: figures are ``data:`` PNGs, the CSS is inline, and a
Content-Security-Policy forbids scripts and any other source.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape
from typing import Any

from lmtune.report import plots
from lmtune.report.cost import COST_COLUMNS, cost_lines, cost_rows
from lmtune.report.distill import SIZE_COLUMNS, size_lines, size_rows
from lmtune.report.run import Run
from lmtune.report.tables import (
    COLUMNS,
    early_stopping_line,
    first_reference,
    forgetting_line,
    generation_lines,
    other_columns,
    other_rows,
    privacy_line,
    reward_lines,
    table_rows,
    value,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
NAV = (
    "<nav>" + "".join(f"<a href='#{k}'>{k}</a>" for k in ("results", "figures", "samples", "data", "config")) + "</nav>"
)
CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --soft: #f5f7fa; --accent: #2f6fde;
        --good: #1e7b45; --bad: #b83232; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 8px; margin: 0; }
.facts div.wide { grid-column: span 2; }
.facts div { background: var(--soft); border-radius: 6px; padding: 6px 10px; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
th:first-child, td:first-child, .txt { text-align: left; }
th:first-child, td:first-child { white-space: nowrap; }
nav { margin: 14px 0 0; font-size: 13px; } nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
td { font-variant-numeric: tabular-nums; }
tr.finetuned td { font-weight: 600; }
tr.task td { color: var(--muted); }
.good { color: var(--good); } .bad { color: var(--bad); }
.notes { margin: 6px 0; padding-left: 20px; } .notes li { margin: 2px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 14px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
table.samples { width: 100%; table-layout: fixed; }
table.samples td, table.samples th { text-align: left; white-space: normal; }
table.samples th:first-child, table.samples td:first-child { width: 34px; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font: 12.5px/1.45 ui-monospace, "DejaVu Sans Mono",
        monospace; }
.tag { display: inline-block; font-size: 11px; color: var(--muted); background: var(--soft); border-radius: 4px;
       padding: 0 5px; margin: 3px 4px 0 0; }
.tag.bad { color: var(--bad); }
.warn { background: #fff8e6; border-left: 4px solid #e6a700; padding: 6px 10px; margin: 4px 0; }
.empty { color: var(--muted); font-style: italic; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
pre.block { background: var(--soft); padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12px;
            max-height: 520px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def render(run: Run) -> str:
    """The whole page for one run."""
    m = run.metrics
    body = [
        _results(m),
        _other(m),
        _size(m),
        _cost(m),
        _figures(run),
        _samples(run),
        _data(run.data_report),
        _config(run),
        _footer(m),
    ]
    sections = re.findall(r"<section id='(\w+)'>", "".join(body))
    nav = "<nav>" + "".join(f"<a href='#{k}'>{k}</a>" for k in sections) + "</nav>"
    head = f"<header><h1>lmtune run report</h1><p class='sub'>{escape(str(run.folder))}</p>{_facts(run)}{nav}</header>"
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>lmtune report: {escape(run.name)}</title><style>{CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(part for part in [head, *body] if part) + "\n</main></body></html>\n"
    )


def _facts(run: Run) -> str:
    m, r = run.metrics, run.metrics.get("run") or {}
    facts = [
        ("model", r.get("model") or (run.config.get("model") or {}).get("name")),
        ("method", r.get("method") or run.config.get("method")),
        ("trainable parameters", _params(r)),
        ("steps", r.get("steps")),
        ("training time", f"{m['train_time_s']:.1f} s" if value(m, "train_time_s") is not None else None),
        ("mean train loss", f"{r['train_loss']:.4f}" if value(r, "train_loss") is not None else None),
        ("held-out set", r.get("eval_source")),
        ("stages", " → ".join(str(s.get("stage")) for s in m.get("stages", [])) or None),
        ("early stopping", early_stopping_line(r).removeprefix("early stopping: ") or None),
    ]
    items = "".join(
        f"<div{' class=wide' if len(str(v)) > 30 else ''}><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>"
        for k, v in facts
        if v is not None
    )
    return f"<dl class='facts'>{items}</dl>" if items else ""


def _params(r: dict[str, Any]) -> str | None:
    if not isinstance(r.get("trainable_params"), int):
        return None
    total = f" of {r['total_params']:,}" if isinstance(r.get("total_params"), int) else ""
    share = f" ({r['trainable_percent']:.2f}%)" if value(r, "trainable_percent") is not None else ""
    return f"{r['trainable_params']:,}{total}{share}"


def _table(header: list[str] | tuple[str, ...], rows: list[list[str]], cls: str = "", delta: bool = False) -> str:
    """A table; with ``delta`` the last column is a signed change, coloured (higher is better)."""
    text = [i > 0 and not all(_numeric(r[i]) for r in rows) for i in range(len(header))]  # left-aligned columns
    head = "".join(f"<th{' class=txt' if t else ''}>{escape(h)}</th>" for h, t in zip(header, text, strict=True))
    body = "".join(
        f"<tr class='{_row_class(r[0])}'>"
        + "".join(_cell(c, delta and i == len(r) - 1, text[i]) for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _row_class(first: str) -> str:
    return "task" if "[" in first else ("finetuned" if first in ("finetuned", "distilled") else "")


def _numeric(c: str) -> bool:
    return c == "-" or bool(re.fullmatch(r"[+-]?[\d.,]+(e[+-]?\d+)?%?", c))


def _cell(c: str, signed: bool = False, text: bool = False) -> str:
    tone = " class='txt'" if text else ""
    if signed and c not in ("-", "") and float(c) != 0:
        tone = " class='good'" if float(c) > 0 else " class='bad'"
    return f"<td{tone}>{escape(c)}</td>"


def _results(m: dict[str, Any]) -> str:
    parts = ["<section id='results'><h2>Results</h2>"]
    if m.get("stages"):
        parts.append("<h3>Overall: base before the first stage, fine-tuned after the last</h3>")
    parts += [_seed_table(m), _notes([privacy_line(m), forgetting_line(m), *generation_lines(m), *reward_lines(m)])]
    for stage in m.get("stages", []):
        parts += [f"<h3>Stage {escape(str(stage.get('stage')))}</h3>", _seed_table(stage)]
        parts.append(_notes([forgetting_line(stage), early_stopping_line(stage.get("run") or {})]))
    return "".join(parts) + "</section>"


def _seed_table(m: dict[str, Any]) -> str:
    rows = table_rows(m)
    if not rows:
        return "<p class='empty'>No evaluation in metrics.json.</p>"
    return _table(COLUMNS, rows, "seed")


def _notes(lines: list[str]) -> str:
    items = "".join(f"<li>{escape(line.replace('`', ''))}</li>" for line in lines if line)
    return f"<ul class='notes'>{items}</ul>" if items else ""


def _other(m: dict[str, Any]) -> str:
    rows = other_rows(m)
    if not rows:
        return ""
    return f"<section id='other'><h2>Other metrics</h2>{_table(other_columns(m), rows, 'other', delta=True)}</section>"


def _size(m: dict[str, Any]) -> str:
    """A distilled student against its teacher: layers, size, speed."""
    rows = size_rows(m)
    if not rows:
        return ""
    table = _table(SIZE_COLUMNS, rows, "size")
    return f"<section id='size'><h2>Smaller and faster</h2>{table}{_notes(size_lines(m))}</section>"


def _cost(m: dict[str, Any]) -> str:
    """Benchmarks and refusal rates, base and tuned (the safety probe's prompts are never shown)."""
    rows, lines = cost_rows(m), cost_lines(m)
    if not rows and not lines:
        return ""
    table = _table(COST_COLUMNS, rows, "cost") if rows else ""
    return f"<section id='cost'><h2>What tuning cost</h2>{table}{_notes(lines)}</section>"


def _figures(run: Run) -> str:
    figs = [f"<figure>{img(png, title)}<figcaption>{escape(caption)}</figcaption></figure>"
            for title, png, caption in figures(run) if png]  # fmt: skip
    if not figs:
        figs = ["<p class='empty'>No training log or metrics to plot.</p>"]
    return f"<section id='figures'><h2>Figures</h2><div class='grid'>{''.join(figs)}</div></section>"


def figures(run: Run) -> list[tuple[str, bytes | None, str]]:
    """(title, PNG or None, caption) of every figure the run's files allow."""
    m, series = run.metrics, run.series()
    best = (m.get("run") or {}).get("best_step") if not run.stages else None
    base, tuned = m.get("base") or {}, m.get("finetuned") or {}
    f = m.get("forgetting") or {}
    scores = [list((x.get("reward") or {}).get("scores") or []) for x in (base, tuned)]
    return [
        ("Loss curves", plots.loss_curves(series, best if isinstance(best, int) else None), "train_log.jsonl"),
        ("Learning rate", plots.lr_curve(series), "learning rate per logged step"),
        ("Metric deltas", plots.metric_deltas(base, tuned), "fine-tuned minus base; perplexity as relative change"),
        ("Forgetting", plots.forgetting(f), f"perplexity on {f.get('reference', 'the general set')}; lower is better"),
        ("Reward scores", plots.reward_histograms(*scores), "reward model scores of the held-out answers"),
        ("Generation during training", plots.generation_curves(series), "gen_* metrics from train_log.jsonl"),
        ("Preference and reward measures", plots.trl_curves(series), "rewards/*, logps/*, reward, kl logged by TRL"),
    ]


def img(png: bytes, alt: str) -> str:
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _samples(run: Run) -> str:
    source = run if run.finetuned or run.base or not run.stages else run.stages[-1]
    n = run.report_samples()
    tuned, base = source.finetuned[:n], source.base[:n]
    if not n or not (tuned or base):
        return ""
    note = f" (stage {escape(source.name)}: before and after that stage)" if source is not run else ""
    rows = []
    for i in range(max(len(tuned), len(base))):
        t, b = (tuned[i] if i < len(tuned) else None), (base[i] if i < len(base) else None)
        first = t or b or {}
        ref = first_reference(first)
        more = len(first.get("reference") or []) - 1 if isinstance(first.get("reference"), list) else 0
        rows.append(
            f"<tr><td>{i + 1}</td><td>{_text(first.get('prompt'))}{_tag(first.get('task'))}</td>"
            f"<td>{_answer(b)}</td><td>{_answer(t)}</td>"
            f"<td>{_text(ref)}{_tag(f'+{more} more reference(s)' if more > 0 else None)}</td></tr>"
        )
    head = "<tr><th>#</th><th>Prompt</th><th>Base</th><th>Fine-tuned</th><th>Reference</th></tr>"
    return (
        f"<section id='samples'><h2>Sample answers{note}</h2>"
        f"<table class='samples'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _text(s: Any) -> str:
    return f"<pre class='text'>{escape('' if s is None else str(s))}</pre>"


def _tag(s: Any, cls: str = "tag") -> str:
    return f"<span class='{cls}'>{escape(str(s))}</span>" if s not in (None, "") else ""


def _answer(row: dict[str, Any] | None) -> str:
    if row is None:
        return "<span class='empty'>not evaluated</span>"
    tags = _tag("reward " + f"{row['reward']:.3f}") if value(row, "reward") is not None else ""
    if row.get("stopped") is False:
        tags += _tag("hit the token cap", "tag bad")
    return _text(row.get("prediction")) + tags


def _data(report: dict[str, Any]) -> str:
    if not report:
        return ""
    parts = ["<section id='data'><h2>Data</h2>"]
    splits = report.get("splits") or {}
    if splits:
        parts.append(_notes([", ".join(f"{k}: {v}" for k, v in splits.items()) + " rows"]))
    sources = [s for s in report.get("sources", []) if isinstance(s, dict)]
    if sources:
        header = ["Source", "Role", "Format", "Task", "Read", "Kept", "Dropped"]
        rows = [[str(s.get(k, "")) for k in ("path", "role", "format", "task", "rows_read", "kept")] +
                [", ".join(f"{k} {v}" for k, v in (s.get("dropped") or {}).items() if v) or "none"]
                for s in sources]  # fmt: skip
        parts.append(_table(header, rows, "sources"))
    parts.append(_notes(_data_lines(report)))
    parts += [f"<div class='warn'>⚠ {escape(str(w))}</div>" for w in report.get("warnings", [])]
    raw = json.dumps(report, indent=2, ensure_ascii=False)
    parts.append(f"<details><summary>data_report.json</summary><pre class='block'>{escape(raw)}</pre></details>")
    return "".join(parts) + "</section>"


def _data_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if len(report.get("tasks") or {}) > 1:
        lines.append("tasks in training: " + ", ".join(f"{k} {v}" for k, v in report["tasks"].items()))
    c = report.get("contamination_dropped") or {}
    if any(c.values()):
        lines.append("contamination: " + ", ".join(f"{v} {k} rows dropped" for k, v in c.items()))
    tok = report.get("tokens") or {}
    q, a = tok.get("length") or {}, tok.get("answer_length") or {}
    if q and a:
        lines.append(
            f"tokens per example: p50 {q.get('p50', 0):.0f}, p90 {q.get('p90', 0):.0f}, max {q.get('max')}; "
            f"answer tokens p50 {a.get('p50', 0):.0f}, max {a.get('max')}"
        )
    return lines


def _config(run: Run) -> str:
    if not run.config_text:
        return ""
    n = run.config_text.count("\n")
    return (
        f"<section id='config'><h2>Configuration</h2><details><summary>config.yaml (resolved, {n} lines)</summary>"
        f"<pre class='block'>{escape(run.config_text)}</pre></details></section>"
    )


def _footer(m: dict[str, Any]) -> str:
    r = m.get("run") or {}
    bits = [f"{k} {v}" for k, v in (r.get("versions") or {}).items()]
    if r.get("git_commit"):
        bits.append(f"git {str(r['git_commit'])[:12]}")
    settings = m.get("metric_settings")
    extra = ""
    if settings:
        raw = escape(json.dumps(settings, indent=2, ensure_ascii=False))
        extra = f"<details><summary>how the metrics were computed</summary><pre class='block'>{raw}</pre></details>"
    return f"<footer>{extra}<p>{escape(' · '.join(['written by lmtune', *bits]))}</p></footer>"
