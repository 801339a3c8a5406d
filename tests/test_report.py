"""``lmtune.report``: report.md / report.html from hand-written run folders, and compare_runs.

The browser test opens report.html in Debian's headless Chromium (``/usr/bin/chromium``,
installed by ``make test``); it is skipped where that binary is absent.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import write_jsonl
from PIL import Image

from lmtune.errors import ConfigError
from lmtune.report import (
    COLUMNS,
    compare_runs,
    forgetting_line,
    markdown_report,
    markdown_table,
    table_rows,
    text_table,
    write_reports,
)

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def model_metrics(ppl: float, bleu: float, rougeL: float, chrf: float, f1: float, scores: list[float]) -> dict:
    return {
        "perplexity": ppl,
        "bleu": {"bleu": bleu, "precisions": [0.7, 0.5, 0.4, 0.3], "brevity_penalty": 1.0},
        "rouge": {"rouge1": rougeL + 0.05, "rouge2": rougeL - 0.1, "rougeL": rougeL, "rougeLsum": rougeL},
        "chrf": {"chrf": chrf},
        "exact_match": f1 / 2,
        "token_f1": f1,
        "reward": {
            "model": "tiny-reward",
            "mean": sum(scores) / len(scores),
            "std": 0.1,
            "min": min(scores),
            "max": max(scores),
            "quantiles": {"p10": min(scores), "p50": sorted(scores)[len(scores) // 2], "p90": max(scores)},
            "n": len(scores),
            "scores": scores,
        },
        "generation": {"samples": 10, "stopped_at_eos": 0.9, "mean_new_tokens": 20.5, "max_new_tokens": 64},
        "by_task": {"weather": {"perplexity": ppl * 1.1}, "maths": {"perplexity": ppl * 0.9}},
        "eval_time_s": 3.0,
    }


BASE = model_metrics(7.913, 0.0281, 0.2418, 0.3120, 0.40, [-0.5, -0.2, 0.0, 0.1, 0.3])
TUNED = model_metrics(1.066, 0.5553, 0.7175, 0.6870, 0.81, [0.2, 0.4, 0.5, 0.7, 0.9])
RUN = {
    "model": "tiny-model",
    "method": "lora",
    "trainable_params": 4884480,
    "total_params": 139399488,
    "trainable_percent": 3.504,
    "steps": 50,
    "train_loss": 0.3423,
    "eval_source": "data/eval.jsonl",
    "best_checkpoint": "checkpoint-40",
    "best_step": 40,
    "best_eval_loss": 0.2101,
    "stopped_early": True,
}
METRICS = {
    "base": BASE,
    "finetuned": TUNED,
    "train_time_s": 229.4,
    "forgetting": {
        "reference": "data/general.jsonl",
        "base_perplexity": 3.604,
        "finetuned_perplexity": 4.917,
        "perplexity_increase_percent": 36.43,
    },
    "reward_comparison": {"finetuned_higher": 0.8, "ties": 0.0, "base_higher": 0.2, "pairs": 5},
    "run": RUN,
}
CONFIG = {
    "method": "lora",
    "lora": {"r": 16, "alpha": 32},
    "training": {"learning_rate": 0.001, "num_train_epochs": 1.0, "max_steps": -1},
    "eval": {"report_samples": 3},
}
DATA_REPORT = {
    "lmtune_data_report": 1,
    "sources": [
        {
            "path": "data/train.jsonl",
            "role": "train",
            "format": "prompt_completion",
            "task": "weather",
            "rows_read": 500,
            "dropped": {"empty": 2, "duplicate": 0},
            "kept": 498,
        },
    ],  # fmt: skip
    "splits": {"train": 480, "eval": 60, "test": 0},
    "tokens": {"length": {"p50": 80.0, "p90": 95.0, "max": 120}, "answer_length": {"p50": 25.0, "max": 40}},
    "warnings": ["480 training examples; generation tasks usually want ~1,000 or more <sic>"],
}


def train_log() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for step in range(5, 55, 5):
        rows.append(
            {"step": step, "epoch": step / 50, "loss": 2.0 / step**0.5, "learning_rate": 1e-3 * (1 - step / 55)}
        )
        if step % 10 == 0:
            rows.append({"step": step, "epoch": step / 50, "eval_loss": 1.5 / step**0.4, "eval_perplexity": 2.0})
        if step % 20 == 0:
            rows.append({"step": step, "epoch": step / 50, "gen_bleu": step / 100, "gen_rougeL": step / 80})
    rows.append({"step": 50, "epoch": 1.0, "train_runtime": 229.0, "train_loss": 0.3423})
    return rows


def predictions(answer: str) -> list[dict[str, Any]]:
    rows = [
        {"prompt": f"Forecast for city {i}.", "reference": f"Sunny in city {i}.", "prediction": f"{answer} {i}.",
         "stopped": True, "task": "weather", "reward": 0.1 * i}
        for i in range(10)
    ]  # fmt: skip
    rows[0]["prompt"] = EVIL
    rows[1]["reference"] = ["Rain in city 1.", "Wet in city 1."]
    rows[2]["stopped"] = False
    return rows


def make_run(folder: Path, metrics: dict | None = None, config: dict | None = None, log: bool = True) -> Path:
    """A run folder as ``lmtune train`` leaves it (without weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(METRICS if metrics is None else metrics), encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(config or CONFIG), encoding="utf-8")
    (folder / "data_report.json").write_text(json.dumps(DATA_REPORT), encoding="utf-8")
    if log:
        write_jsonl(folder / "train_log.jsonl", train_log())
    write_jsonl(folder / "predictions_base.jsonl", predictions("Base answer for"))
    write_jsonl(folder / "predictions_finetuned.jsonl", predictions("Tuned answer for"))
    return folder


def images(html: str) -> list[Image.Image]:
    """Every <img> of the page, decoded; each must be a PNG data URI."""
    sources = re.findall(r"<img [^>]*src='([^']*)'", html)
    out = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data[:8] == PNG_MAGIC
        out.append(Image.open(io.BytesIO(data)))
    return out


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run-a")


# --------------------------------------------------------------------------- report.html / report.md


def test_write_reports_writes_both_files(run_dir):
    paths = write_reports(run_dir)
    assert paths == {"markdown": run_dir / "report.md", "html": run_dir / "report.html"}
    assert all(p.is_file() for p in paths.values())


def test_html_holds_the_tables_values(run_dir):
    html = write_reports(run_dir)["html"].read_text(encoding="utf-8")
    for cell in ("7.913", "1.066", "0.0281", "0.5553", "0.7175", "229.4", *COLUMNS):
        assert f"<td>{cell}</td>" in html or f"<th>{cell}</th>" in html, cell
    assert "finetuned [maths]" in html and "base [weather]" in html  # per-task rows
    # the other metrics with their change: chrF 0.3120 -> 0.6870
    assert re.search(r"<td>chrF</td><td>0\.3120</td><td>0\.6870</td><td class='good'>\+0\.3750</td>", html)
    assert "<td>token F1</td>" in html and "<td>reward mean</td>" in html
    assert "+36.4%" in html  # forgetting
    assert "fine-tuned higher in 80% of 5 pairs" in html
    assert "checkpoint-40" in html and "stopped early after 50 steps" in html
    assert "480 training examples" in html and "data/train.jsonl" in html  # data report
    assert "learning_rate: 0.001" in html  # config.yaml


def test_html_figures_are_embedded_pngs(run_dir):
    html = write_reports(run_dir)["html"].read_text(encoding="utf-8")
    imgs = images(html)
    # loss, learning rate, metric deltas, forgetting, reward histograms, generation metrics
    assert len(imgs) == 6
    for im in imgs:
        assert im.format == "PNG" and im.width >= 300 and im.height >= 150
    # self-contained: nothing but data: URIs is loaded
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:|#)", html)
    assert "http://" not in html and "https://" not in html


def test_html_escapes_everything(run_dir):
    html = write_reports(run_dir)["html"].read_text(encoding="utf-8")
    assert "<script" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;sic&gt;" in html  # a data-report warning


def test_samples_follow_report_samples(run_dir):
    html = write_reports(run_dir)["html"].read_text(encoding="utf-8")
    samples = html.split("id='samples'")[1].split("</table>")[0]
    assert samples.count("<tr>") == 1 + 3  # header + eval.report_samples
    assert "Base answer for 1." in samples and "Tuned answer for 1." in samples
    assert "Rain in city 1." in samples and "+1 more reference(s)" in samples
    assert "hit the token cap" in samples and "reward 0.200" in samples
    assert "Forecast for city 3." not in samples


def test_markdown_report_keeps_the_table_and_adds_the_new_lines(run_dir):
    md = write_reports(run_dir)["markdown"].read_text(encoding="utf-8")
    assert markdown_table(METRICS) in md
    assert "| chrF | 0.3120 | 0.6870 | +0.3750 |" in md
    assert "- forgetting: perplexity on data/general.jsonl 3.604 -> 4.917 (+36.4%)" in md
    assert "fine-tuned higher in 80% of 5 pairs, base higher in 20%, ties 0%" in md
    assert "best checkpoint checkpoint-40 (step 40, eval loss 0.2101)" in md
    assert md.count("**Prompt:**") == 3
    assert "- base: Base answer for 1." in md


def test_the_seed_table_is_unchanged():
    metrics = METRICS
    rows = table_rows(metrics)
    assert rows[0] == ["base", "7.913", "0.0281", "0.7000", "0.5000", "0.4000", "0.3000",
                       "0.2918", "0.1418", "0.2418", "0.2418", "-"]  # fmt: skip
    assert rows[1][0] == "finetuned" and rows[1][-1] == "229.4"
    assert text_table(metrics).splitlines()[0].split() == [c for col in COLUMNS for c in col.split()]
    assert forgetting_line({}) == "" and markdown_report({}).startswith("# lmtune run report")


def test_only_some_inputs(tmp_path):
    """No base evaluation, no eval loss, no reward, no predictions, no data report: still a page."""
    folder = tmp_path / "bare"
    folder.mkdir()
    tuned = {"perplexity": 1.066, "bleu": TUNED["bleu"], "rouge": TUNED["rouge"]}
    (folder / "metrics.json").write_text(json.dumps({"finetuned": tuned, "train_time_s": 12.0}), encoding="utf-8")
    write_jsonl(folder / "train_log.jsonl", [{"step": 1, "epoch": 0.1, "loss": 2.0}, {"step": 2, "epoch": 0.2}])
    (folder / "train_log.jsonl").open("a").write('{"step": 3, "lo')  # cut short mid-write
    html = write_reports(folder)["html"].read_text(encoding="utf-8")
    assert "<td>1.066</td>" in html and "id='other'" not in html and "id='samples'" not in html
    assert len(images(html)) == 1  # the loss curve alone
    # only a config: the page says there is nothing to show instead of failing
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    (only_config / "config.yaml").write_text("method: lora\n", encoding="utf-8")
    html = write_reports(only_config)["html"].read_text(encoding="utf-8")
    assert "No evaluation in metrics.json." in html and images(html) == []
    # base predictions only (no fine-tuned evaluation yet)
    base_only = make_run(tmp_path / "base-only", metrics={"base": BASE}, log=False)
    (base_only / "predictions_finetuned.jsonl").unlink()
    html = write_reports(base_only)["html"].read_text(encoding="utf-8")
    assert "Base answer for 1." in html and "not evaluated" in html


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="not an lmtune run folder"):
        write_reports(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="metrics.json: not valid JSON"):
        write_reports(tmp_path)


def test_staged_run_has_a_table_per_stage(tmp_path):
    top = tmp_path / "staged"
    stage_rows = []
    for i, name in enumerate(("general", "weather")):
        folder = make_run(top / f"{i + 1}-{name}")
        stage_rows.append(
            {"stage": name, "folder": str(folder), **METRICS, "finetuned": {**TUNED, "perplexity": 2.5 + i}}
        )
    metrics = {"stages": stage_rows, "base": BASE, "finetuned": stage_rows[-1]["finetuned"], "train_time_s": 458.8}
    (top / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = write_reports(top)["html"].read_text(encoding="utf-8")
    assert "Stage general" in html and "Stage weather" in html
    assert "<td>2.500</td>" in html and "<td>3.500</td>" in html and "<td>458.8</td>" in html
    assert "stage 2-weather: before and after that stage" in html  # samples from the last stage
    assert len(images(html)) >= 3  # the stages' loss and learning-rate curves, the deltas
    assert "## Stage general" in (top / "report.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- compare_runs


def test_compare_runs_table_and_plot(tmp_path):
    a = make_run(tmp_path / "lr-high")
    b_metrics = {**METRICS, "finetuned": {**TUNED, "perplexity": 1.5, "chrf": {"chrf": 0.5}}, "train_time_s": 99.0}
    b_metrics["run"] = {**RUN, "method": "full"}
    b_config = {**CONFIG, "method": "full", "training": {"learning_rate": 2e-5, "max_steps": 200}}
    b = make_run(tmp_path / "full-ft", metrics=b_metrics, config=b_config)
    text = compare_runs([a, b], tmp_path / "cmp")
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Run", "Method", "LR", "Budget"]
    assert lines[2].split() == ["lr-high", "lora", "0.001", "1", "epoch", "16", "50", "229.4", "1.066", "0.5553",
                                "0.7175", "0.6870", "0.8100", "+36.4%"]  # fmt: skip
    assert lines[3].split() == ["full-ft", "full", "2e-05", "200", "steps", "-", "50", "99.0", "1.500", "0.5553",
                                "0.7175", "0.5000", "0.8100", "+36.4%"]  # fmt: skip
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert md.startswith("| Run | Method | LR | Budget | LoRA r | Steps | Time (s) | PPL | BLEU | ROUGE-L | chrF |")
    assert "| full-ft | full | 2e-05 | 200 steps | - |" in md
    png = (tmp_path / "cmp" / "compare_loss.png").read_bytes()
    assert png[:8] == PNG_MAGIC and Image.open(io.BytesIO(png)).size[0] >= 300


def test_compare_runs_without_output_writes_nothing_and_without_logs_a_note(tmp_path):
    a = make_run(tmp_path / "a", log=False)
    text = compare_runs([a])
    assert "1.066" in text and "chrF" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    compare_runs([a], tmp_path / "cmp")  # no training log: the PNG is a note saying so
    assert (tmp_path / "cmp" / "compare_loss.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_runs_rejects_a_folder_that_is_not_a_run(tmp_path):
    a = make_run(tmp_path / "a")
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError) as err:
        compare_runs([a, tmp_path / "notes"], tmp_path / "cmp")
    assert str(err.value) == f"{tmp_path / 'notes'}: not a run folder (no metrics.json in it)"
    assert not (tmp_path / "cmp").exists()


# --------------------------------------------------------------------------- in a real browser


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (make test installs it as root)")
def test_report_renders_in_chromium(run_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = write_reports(run_dir)["html"]
    shot = tmp_path / "report.png"
    requests: list[str] = []
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            table = page.locator("table.seed").first
            assert table.is_visible()
            assert "7.913" in table.inner_text() and "1.066" in table.inner_text()
            loaded = page.eval_on_selector_all("img", "els => els.map(i => i.complete && i.naturalWidth > 0)")
            assert len(loaded) == 6 and all(loaded)
            assert page.locator("text=<script>alert('x')</script>").count() == 1  # shown as text
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    im = Image.open(shot)
    assert im.format == "PNG" and im.height > 900
    lo, hi = im.convert("L").getextrema()
    assert hi - lo > 100  # not a blank page
