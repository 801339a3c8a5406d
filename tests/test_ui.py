"""``lmtune ui``: the real server in a subprocess, driven in Debian's headless Chromium through the whole loop.

Data check -> config form -> start a run -> live curve -> stop (checkpoint) and resume -> results ->
compare -> chat with base and fine-tuned side by side; bad input shows the CLI's one-line messages.
Screenshots of every page go to the test's tmp_path. Skipped where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from helpers import CHROMIUM, CHROMIUM_ARGS, EVAL_ROWS, REPO_ROOT, TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.config import load_config

START_LIMIT_S = 5.0
RUN_STEPS = 200  # long enough to be stopped while it trains (~35 steps/s on an idle 2-core CPU)
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lmtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmtune", *args]


def env() -> dict[str, str]:
    src = str(REPO_ROOT / "src")  # this checkout's lmtune, also in the training processes the server starts
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def post(url: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a POST, as the pages send it."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def ui_server(folder: Path, model: Path | None = None) -> Iterator[tuple[str, int, float]]:
    """``lmtune ui`` on a free port in ``folder``; yields (url, port, seconds to the first HTTP 200)."""
    port = free_port()
    args = ["ui", "--port", str(port), "--runs", "runs"] + (["--model", str(model)] if model else [])
    log = (folder / "server.log").open("wb")
    start = time.perf_counter()
    server = subprocess.Popen(lmtune(*args), cwd=folder, env=env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.perf_counter() - start > 60:
                    raise AssertionError((folder / "server.log").read_text()) from None
                time.sleep(0.05)
        yield url, port, time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_ui_starts_in_under_5_s_answers_bad_requests_in_one_line_and_refuses_a_port_in_use(tmp_path):
    with ui_server(tmp_path) as (url, port, started):
        assert started < START_LIMIT_S, f"first HTTP 200 after {started:.2f} s"
        page = urllib.request.urlopen(url + "/config").read().decode()
        assert "http://" not in page and "https://" not in page  # nothing loaded from the network
        saved = post(url + "/api/config/save", {"values": {"data.train": "train.jsonl"}, "path": "mine.yaml"})
        assert saved == (200, {"saved": "mine.yaml", "command": "lmtune train mine.yaml"})
        assert load_config(tmp_path / "mine.yaml").data.train == "train.jsonl"  # what lmtune train reads
        again_saved = post(url + "/api/config/save", {"values": {"data.train": "other.jsonl"}, "path": "mine.yaml"})
        assert again_saved == (400, {"error": "lmtune: error: mine.yaml: exists; tick 'replace' to overwrite it, "
                                              "or give another file name"})  # fmt: skip
        assert "train.jsonl" in (tmp_path / "mine.yaml").read_text()
        assert post(url + "/api/runs/nope/stop", {}) == (
            400,
            {"error": "lmtune: error: run 'nope': no such run under runs"},
        )
        assert post(url + "/api/data/check", {"path": "x.jsonl", "format": "tsv"})[0] == 400  # not a format
        again = subprocess.run(lmtune("ui", "--port", str(port)), cwd=tmp_path, env=env(),
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        == f"lmtune: error: --port {port}: 127.0.0.1:{port} is already in use; choose another with --port"
    )
    assert "Traceback" not in again.stderr
    assert f"http://127.0.0.1:{port}" in (tmp_path / "server.log").read_text()  # loopback unless told otherwise


@pytest.fixture
def project(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """A user's folder: data files and a run config for the tiny model (the form loads it)."""
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, tmp_path / "runs" / "placeholder")
    del raw["training"]["output_dir"], raw["training"]["max_steps"]  # typed into the form by the test
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return tmp_path


@contextmanager
def browser_page(url: str) -> Iterator[tuple[object, list[str]]]:
    """A Chromium page; yields it and the list of requests that left 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            outside: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith(url) or r.url.startswith("data:") else outside.append(r.url),
            )
            page.set_default_timeout(30_000)
            yield page, outside
        finally:
            browser.close()


def fill_the_form(page, url: str) -> None:
    """Load tiny.yaml into the config form, then type the steps and the run folder."""
    page.goto(url + "/config")
    page.fill("#config-path", "tiny.yaml")
    page.click("#config-load")
    page.wait_for_function("document.querySelector('#config-yaml').textContent.includes('target_modules')")
    page.fill("#f-training\\.max_steps", str(RUN_STEPS))
    page.fill("#f-training\\.output_dir", "runs/ui-run")


@needs_chromium
def test_the_whole_loop_in_chromium(project, tiny_llama_dir):
    shots = project / "screenshots"
    shots.mkdir()
    with ui_server(project, tiny_llama_dir) as (url, _, _), browser_page(url) as (page, outside):
        # Data: check a file, see its rows and the trained tokens marked
        page.goto(url + "/data")
        page.fill("#data-path", "train.jsonl")
        page.click("#data-check")
        page.wait_for_selector("#data-rows")
        assert "16 rows read, 16 kept" in page.inner_text("#data-counts")
        assert page.inner_text("#data-rows") == "train 14 · eval 2 · test 0"
        assert page.locator("#data-samples .trained").count() == 3  # one answer per sample row
        assert "0 plus 0 is 0." in page.locator("#data-samples .trained").first.inner_text()
        assert page.locator("#data-hist rect").count() == 10
        page.screenshot(path=str(shots / "data.png"), full_page=True)

        # Config: load the YAML, fill fields, see it validated and the YAML beside it
        fill_the_form(page, url)
        page.wait_for_function("document.querySelector('#config-yaml').textContent.includes('output_dir: runs/ui-run')")
        assert page.get_attribute("#config-status", "class") == "status good"
        assert yaml.safe_load(page.inner_text("#config-yaml"))["training"]["max_steps"] == RUN_STEPS
        page.screenshot(path=str(shots / "config.png"), full_page=True)

        # Train: start, watch the live curve get points, stop (checkpoint), resume to the end
        page.click("#config-start")
        page.wait_for_url("**/train?run=ui-run")
        page.wait_for_function("+document.querySelector('#chart-loss').dataset.points >= 3", timeout=120_000)
        assert page.inner_text("#live-status") == "running"
        page.screenshot(path=str(shots / "train.png"), full_page=True)
        page.click("#run-stop")
        page.wait_for_function("document.querySelector('#live-status').textContent === 'stopped'", timeout=120_000)
        stopped_at = int(page.inner_text("#live-step").split()[1])
        assert 0 < stopped_at < RUN_STEPS
        assert (project / "runs" / "ui-run" / f"checkpoint-{stopped_at}").is_dir()
        page.reload()  # the state is in the run folder and the process table, not in the page
        page.wait_for_function("document.querySelector('#live-status').textContent === 'stopped'")
        page.click("#run-resume")
        page.wait_for_function("document.querySelector('#live-status').textContent === 'finished'", timeout=300_000)
        points = int(page.get_attribute("#chart-loss", "data-points"))
        assert points >= RUN_STEPS  # every logged step, before and after the stop

        # Results: the before/after table of the run, compare
        page.goto(url + "/results?run=ui-run")
        rows = page.locator("#before-after tbody tr")
        assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == ["base", "finetuned"]
        assert "forgetting: perplexity on general" in page.inner_text("#forgetting")
        report = page.request.get(url + "/report/ui-run")
        assert report.status == 200 and "<table class='seed'>" in report.text()
        page.check("#compare-runs input[value='ui-run']")
        page.click("#compare-go")
        page.wait_for_function("document.querySelector('#compare-table').textContent.includes('ui-run')")
        page.screenshot(path=str(shots / "results.png"), full_page=True)

        # The same run folder again: refused with the CLI's message, nothing started or changed
        fill_the_form(page, url)
        page.click("#config-start")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith(
            "lmtune: error: training.output_dir: runs/ui-run already holds a finished run"
        )
        assert page.url == url + "/config"

        # Chat: both models answer the same prompt
        page.goto(url + "/chat?run=ui-run")
        page.fill("#chat-max", "8")
        page.fill("#chat-message", "Add 2 and 3.")
        page.click("#chat-send")
        page.wait_for_function("document.querySelector('#chat-state').textContent === 'done'", timeout=120_000)
        assert page.inner_text("#answer-base").strip() and page.inner_text("#answer-finetuned").strip()
        assert page.is_hidden("#error")
        page.screenshot(path=str(shots / "chat.png"), full_page=True)
        assert outside == []


@needs_chromium
def test_bad_input_shows_the_cli_message_and_the_server_keeps_serving(project):
    (project / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": oops\n', encoding="utf-8")
    with ui_server(project) as (url, _, _), browser_page(url) as (page, _):
        page.goto(url + "/config")
        page.fill("#f-data\\.train", "train.jsonl")
        page.fill("#f-training\\.learning_rate", "-1")
        # the check of the last value typed: an earlier one (data still empty) may be the one shown first
        page.wait_for_function("document.querySelector('#config-status').textContent.includes('learning_rate')")
        shown = page.inner_text("#config-status")
        (project / "lmtune-ui.yaml").write_text(page.inner_text("#config-yaml"), encoding="utf-8")
        cli = subprocess.run(lmtune("train", "lmtune-ui.yaml"), cwd=project, env=env(),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cli.returncode == 2
        assert shown == cli.stderr.strip().splitlines()[-1]
        assert (
            shown == "lmtune: error: lmtune-ui.yaml: training.learning_rate: input should be greater than 0 (found -1)"
        )

        page.fill("#f-training\\.learning_rate", "1e-3")
        page.fill("#config-more", "training.lerning_rate=0.1")
        page.wait_for_function("document.querySelector('#config-status').textContent.includes('did you mean')")

        page.goto(url + "/data")
        page.fill("#data-path", "bad.jsonl")
        page.click("#data-check")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error") == "lmtune: error: bad.jsonl:2: malformed JSON (Expecting value at column 12)"
        assert "Traceback" not in page.content()
        page.set_input_files("#data-upload", str(project / "bad.jsonl"))  # an upload is kept, then checked
        page.click("#data-check")
        page.wait_for_function("document.querySelector('#error').textContent.includes('uploads')")
        assert page.inner_text("#error").startswith("lmtune: error: runs/.ui/uploads/bad.jsonl:2: malformed JSON")
        assert (project / "runs" / ".ui" / "uploads" / "bad.jsonl").read_bytes() == (project / "bad.jsonl").read_bytes()
        page.screenshot(path=str(project / "bad-data.png"), full_page=True)
        with urllib.request.urlopen(url + "/data") as r:  # still serving
            assert r.status == 200


def test_the_form_is_built_from_the_schema_and_round_trips_a_config(tmp_path, tiny_llama_dir):
    from lmtune.config import validate_config
    from lmtune.ui.forms import form_lines, form_sections, form_values, raw_config

    fields = {f.key: f for s in form_sections() for f in s.fields}
    assert fields["method"].strict and "lora" in fields["method"].choices
    assert fields["model.dtype"].choices == ["auto", "float32", "bfloat16", "float16"]
    assert fields["training.learning_rate"].default == "0.0002"
    assert fields["model.name"].help.startswith("Hub id (e.g. gpt2)")  # the field's docstring
    raw = tiny_run_raw(tiny_llama_dir, tmp_path / "t.jsonl", tmp_path / "e.jsonl", tmp_path / "run")
    raw["training"]["save_strategy"] = "no"  # a choice YAML would read as false
    raw["data"]["stratify"] = "no"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    values, more = form_values(tmp_path / "c.yaml")
    assert more == "training.dataloader_num_workers=0"  # a TrainingArguments field the form has no field for
    assert raw_config(form_lines(values, more)) == raw
    assert validate_config(raw_config(form_lines(values, more))).data.stratify == "no"


def test_runs_started_from_the_command_line_are_listed_with_their_state(tmp_path):
    from lmtune.ui.jobs import Jobs

    run = tmp_path / "runs" / "cli-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n", encoding="utf-8")
    write_jsonl(run / "train_log.jsonl", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    (tmp_path / "runs" / "notes").mkdir()  # not a run folder
    jobs = Jobs(tmp_path / "runs")
    assert [s.as_dict() for s in jobs.states()] == [
        {"name": "cli-run", "folder": str(run), "status": "running", "step": 2, "pid": None, "origin": "cli",
         "note": "started from the command line"}
    ]  # fmt: skip
    old = time.time() - 3600
    for f in run.iterdir():
        os.utime(f, (old, old))
    assert jobs.state("cli-run").status == "incomplete"  # a killed run that left no checkpoint
    (run / "metrics.json").write_text("{}", encoding="utf-8")
    assert jobs.state("cli-run").status == "finished"
    assert jobs.progress("cli-run")["log"][-1] == {"step": 2, "loss": 1.5}
