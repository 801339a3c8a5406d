"""``lmtune sweep`` on a tiny random model: the search space checked up front, a killed sweep continued,
two processes on one SQLite study, and best.yaml reproducing the best trial."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EVAL_ROWS, REPO_ROOT, TRAIN_ROWS, tiny_run_raw, write_jsonl

from lmtune.cli import main

SPACE = {"training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora.r": [2, 4, 8]}


def sweep_raw(tiny_llama_dir: Path, root: Path, **sweep: Any) -> dict[str, Any]:
    """A sweep config whose trials take a few seconds each (two steps, eval loss after each)."""
    train = write_jsonl(root / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    raw = tiny_run_raw(tiny_llama_dir, train, held_out, root / "sweep")
    raw["training"].update({"max_steps": 2, "plan": False, "eval_strategy": "steps", "eval_steps": 1})
    raw["eval"].update({"base": False, "reference": None, "metrics": ["perplexity"]})
    raw["sweep"] = {"objective": "eval_loss", "heartbeat": 1, "space": SPACE, **sweep}
    return raw


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def sweep_process(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "lmtune", "sweep", str(config), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def states(storage: str, name: str) -> list[tuple[int, str]]:
    """(number, state) of every trial of the study, read from the storage as another process would."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # not created yet
        return []
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


def finished(trials: list[tuple[int, str]]) -> list[int]:
    return [n for n, s in trials if s in ("COMPLETE", "PRUNED")]


def ran(stdout: str) -> int:
    """Trials the process started, from its own lines (``trial 3: key=value, ...  ->  folder``)."""
    return sum(" ->  " in line for line in stdout.splitlines())


# --------------------------------------------------------------------------- checked before any trial


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"training.learning_rat": {"low": 1e-4, "high": 1e-2}},
         "sweep.space.training.learning_rat: unknown key (did you mean 'training.learning_rate'?)"),
        ({"training.learning_rate": {"low": 1e-2, "high": 1e-4}},
         "sweep.space.training.learning_rate: low (0.01) is above high (0.0001)"),
        ({"lora.r": []}, "sweep.space.lora.r: empty list of choices"),
        ({"lora.r": [4, -1]}, "sweep.space.lora.r: the config refuses -1 (lora.r: input should be greater than 0"),
        ({"method": {"low": 1, "high": 2}}, "sweep.space.method: not a number key; give a list of choices"),
    ],
)  # fmt: skip
def test_a_bad_search_space_is_one_line_exit_2_and_nothing_is_written(tiny_llama_dir, tmp_path, capsys, space, message):
    raw = sweep_raw(tiny_llama_dir, tmp_path)
    raw["sweep"]["space"] = space
    config = write_config(tmp_path / "sweep.yaml", raw)
    before = sorted(tmp_path.rglob("*"))
    assert main(["sweep", str(config), "--trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmtune: error: ") and message in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # no sweep folder, no storage


def test_an_objective_the_run_does_not_measure_is_refused(tiny_llama_dir, tmp_path, capsys):
    raw = sweep_raw(tiny_llama_dir, tmp_path, objective="finetuned.bleu", pruner="none")
    assert main(["sweep", str(write_config(tmp_path / "s.yaml", raw)), "--trials", "2"]) == 2
    assert "sweep.objective: finetuned.bleu: eval.metrics does not measure bleu" in capsys.readouterr().err


def test_a_config_without_sweep_loads_as_before(tiny_llama_dir, tmp_path):
    from lmtune.config import dump_config, validate_config

    raw = sweep_raw(tiny_llama_dir, tmp_path)
    plain = {k: v for k, v in raw.items() if k != "sweep"}
    assert validate_config(plain).sweep is None
    assert dump_config(validate_config(raw)) == dump_config(validate_config(plain))  # no sweep in config.yaml


# --------------------------------------------------------------------------- killed and started again


@pytest.fixture(scope="module")
def killed_and_continued(tiny_llama_dir, tmp_path_factory) -> dict[str, Any]:
    """4 trials in SQLite; the process SIGKILLed once two are finished, then the same command again."""
    root = tmp_path_factory.mktemp("sweep-kill")
    config = write_config(root / "sweep.yaml", sweep_raw(tiny_llama_dir, root))
    storage = f"sqlite:///{root / 'study.db'}"
    first = sweep_process(config, "--trials", "4", "--storage", storage, "--study", "kill")
    deadline = time.monotonic() + 300
    while len(finished(states(storage, "kill"))) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = states(storage, "kill")
    second = subprocess.run([*sweep_process_args(config), "--trials", "4", "--storage", storage, "--study", "kill"],
                            env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    third = subprocess.run([*sweep_process_args(config), "--trials", "4", "--storage", storage, "--study", "kill"],
                           env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    return {"root": root, "storage": storage, "at_kill": at_kill, "second": second, "third": third}


def sweep_process_args(config: Path) -> list[str]:
    return [sys.executable, "-m", "lmtune", "sweep", str(config)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}


def test_a_killed_sweep_runs_exactly_the_remaining_trials(killed_and_continued):
    k = killed_and_continued
    assert len(finished(k["at_kill"])) == 2, k["at_kill"]
    second = k["second"]
    assert second.returncode == 0, second.stderr
    assert ran(second.stdout) == 2, second.stdout
    trials = states(k["storage"], "kill")
    assert len(finished(trials)) == 4
    assert len(set(finished(trials))) == 4
    # the trial killed mid-run is failed (its heartbeat stopped), not counted; nothing else failed
    assert [s for _, s in trials if s not in ("COMPLETE", "PRUNED")] == ["FAIL"] * (len(k["at_kill"]) - 2)
    third = k["third"]  # --trials is the study's total: once it is reached, the same command adds none
    assert third.returncode == 0 and ran(third.stdout) == 0, third.stdout
    assert states(k["storage"], "kill") == trials


def test_the_sweep_folder_holds_every_trial_and_the_reports(killed_and_continued):
    folder = killed_and_continued["root"] / "sweep"
    summary = json.loads((folder / "sweep.json").read_text())
    done = [t for t in summary["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and summary["trials_finished"] == 4
    for t in done:
        assert (folder / t["folder"] / "metrics.json").is_file()
        assert "sweep" not in yaml.safe_load((folder / t["folder"] / "config.yaml").read_text())
        assert set(t["params"]) == set(SPACE)
        assert list(t["intermediate_eval_loss"]) == ["1", "2"]  # the pruner saw each evaluation
        assert t["seconds"] > 0
    complete = [t for t in done if t["state"] == "COMPLETE"]
    assert summary["best"]["value"] == min(t["value"] for t in complete)
    assert (folder / "sweep_objective.png").stat().st_size > 1000
    table = (folder / "sweep.md").read_text()
    assert all(f"| {t['number']} | {t['state'].lower()} |" in table for t in done)
    assert "<img" in (folder / "sweep.html").read_text()
    assert "best: trial" in killed_and_continued["second"].stdout


def test_best_yaml_trained_again_gives_the_best_trials_value(killed_and_continued, capsys):
    from lmtune.sweep.objective import objective_value

    folder = killed_and_continued["root"] / "sweep"
    summary = json.loads((folder / "sweep.json").read_text())
    assert main(["train", str(folder / "best.yaml")]) == 0
    again = json.loads((folder / "best" / "metrics.json").read_text())
    assert math.isclose(objective_value(again, "eval_loss"), summary["best"]["value"], rel_tol=1e-6)


# --------------------------------------------------------------------------- two processes, one study


def test_two_processes_on_one_sqlite_study_end_with_the_requested_trials(tiny_llama_dir, tmp_path):
    config = write_config(tmp_path / "sweep.yaml", sweep_raw(tiny_llama_dir, tmp_path, pruner="none"))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [sweep_process(config, "--trials", "4", "--storage", storage, "--study", "shared") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    trials = states(storage, "shared")
    assert len(finished(trials)) == 4, trials
    assert sum(ran(out) for out, _ in outs) == 4  # every trial ran once, in one of the two
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    folders = [t["folder"] for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert len(set(folders)) == 4
    assert [t for t in summary["trials"] if t["state"] not in ("COMPLETE", "NOT RUN")] == []


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the two trials "elsewhere" are asked for by hand
def test_a_trial_created_past_the_total_is_not_run_and_not_counted(tiny_llama_dir, tmp_path):
    """The race two processes can run into: both ask for a trial when one is left; the later one is not run."""
    from lmtune.config import validate_config
    from lmtune.sweep.report import sweep_summary
    from lmtune.sweep.storage import open_storage, open_study
    from lmtune.sweep.study import NotRun, Sweep, run_trial

    raw = sweep_raw(tiny_llama_dir, tmp_path, pruner="none")
    cfg = validate_config(raw)
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = open_study(open_storage(url, 30), "race", "minimize", {}, 0, prune=False)
    study.ask(), study.ask()  # two trials running in other processes take the whole budget of 2
    sweep = Sweep(cfg=cfg, raw=raw, folder=tmp_path / "sweep", trials=2, storage_url=url)
    study.optimize(lambda trial: run_trial(sweep, trial), n_trials=1, catch=(NotRun,))
    last = study.get_trials()[-1]
    assert last.number == 2 and last.state.name == "FAIL" and last.params == {}
    assert not (tmp_path / "sweep").exists()  # no run folder: nothing was trained
    summary = sweep_summary(sweep, study)
    assert summary["trials"][-1]["state"] == "NOT RUN" and summary["trials_finished"] == 0


def test_a_study_started_for_another_search_is_refused(tmp_path):
    from lmtune.errors import LmtuneError
    from lmtune.sweep.storage import open_storage, open_study

    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}", 30)
    open_study(storage, "s", "minimize", {"objective": "eval_loss", "space": SPACE}, 0, prune=True)
    with pytest.raises(LmtuneError, match="study 's' was started with another sweep \\(space differ\\)"):
        open_study(storage, "s", "minimize", {"objective": "eval_loss", "space": {"lora.r": [2]}}, 0, prune=True)


def test_a_folder_holding_other_files_is_refused_and_left_alone(tiny_llama_dir, tmp_path, capsys):
    raw = sweep_raw(tiny_llama_dir, tmp_path)
    mine = tmp_path / "sweep" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    assert main(["sweep", str(write_config(tmp_path / "s.yaml", raw)), "--trials", "1"]) == 2
    assert "holds files that are not a sweep" in capsys.readouterr().err
    assert [p.name for p in mine.parent.iterdir()] == ["notes.txt"]


def test_a_pruned_trial_stops_training_and_does_not_become_the_best(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    import optuna

    # the pruner's verdict is forced for trial 1 (which trial the median pruner stops is the sampler's luck)
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    raw = sweep_raw(tiny_llama_dir, tmp_path)
    assert main(["sweep", str(write_config(tmp_path / "s.yaml", raw)), "--trials", "3"]) == 0
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "PRUNED", "COMPLETE"]
    pruned = summary["trials"][1]
    assert list(pruned["intermediate_eval_loss"]) == ["1"]  # stopped after the first evaluation of two
    log = (tmp_path / "sweep" / pruned["folder"] / "train_log.jsonl").read_text().splitlines()
    assert max(json.loads(line)["step"] for line in log) == 1
    assert summary["best"]["number"] in (0, 2)
    assert "trial 1: pruned at step 1" in capsys.readouterr().out


def test_a_failed_trial_is_replaced_and_failures_in_a_row_stop_the_sweep(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    """A trial whose run stops (a diverged loss, out of memory) is failed and another runs in its place;
    three in a row stop the sweep with one line. The runs are stand-ins: this is about the loop."""
    import lmtune.pipeline
    from lmtune.guards import TrainingStopped

    def finetune(cfg, callbacks=None, **kwargs):
        if cfg.training.output_dir.endswith("trial-0001") or always_fail:
            raise TrainingStopped("training stopped at step 2: the loss is not a finite number")
        return {"finetuned": {"perplexity": 2.0}}

    monkeypatch.setattr(lmtune.pipeline, "finetune", finetune)
    always_fail = False
    config = write_config(tmp_path / "s.yaml", sweep_raw(tiny_llama_dir, tmp_path, pruner="none"))
    assert main(["sweep", str(config), "--trials", "2"]) == 0
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "not a finite number" in summary["trials"][1]["error"]
    always_fail = True
    capsys.readouterr()
    assert main(["sweep", str(config), "--trials", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lmtune: error: 3 trials in a row failed; the last: training stopped at step 2: the loss is not "
                   "a finite number"]  # fmt: skip
    assert len(json.loads((tmp_path / "sweep" / "sweep.json").read_text())["trials"]) == 6
