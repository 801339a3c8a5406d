"""Training jobs: ``python -m lmtune train`` in its own process, and every run folder under ``--runs``.

What the page shows lives in files and the process table, never in the browser or the server's memory:
a job started here writes ``<runs>/.ui/jobs/<name>.{yaml,log,json}`` (the config it ran, its console,
its pid); a run started from the command line is found by its run folder. A reload, or a restarted
server, sees the same state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.checkpoints import latest_checkpoint
from lmtune.config import RunConfig, read_yaml, validate_config
from lmtune.errors import ConfigError
from lmtune.files import atomic_write_json, atomic_write_text
from lmtune.objectives import config_text
from lmtune.run_folder import TRAIN_LOG

UI_FOLDER = ".ui"
RECENT_S = 120  # a CLI run with no metrics.json whose log changed this recently is taken as running
LOG_TAIL = 60


@dataclass
class RunState:
    name: str
    folder: Path
    status: str  # running, stopping, finished, stopped (a checkpoint to resume), failed, incomplete
    step: int
    pid: int | None
    origin: str  # "ui" or "cli"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "status": self.status,
            "step": self.step,
            "pid": self.pid,
            "origin": self.origin,
            "note": self.note,
        }


class Jobs:
    """The runs under one ``--runs`` folder and the training processes this UI started."""

    def __init__(self, runs: Path):
        self.runs = Path(runs)
        self.jobs = self.runs / UI_FOLDER / "jobs"

    # ------------------------------------------------------------------ listing

    def names(self) -> list[str]:
        """Run folders (any folder holding run files) and jobs, newest first."""
        found: dict[str, float] = {}
        if self.runs.is_dir():
            for folder in self.runs.iterdir():
                if folder.is_dir() and not folder.name.startswith(".") and _looks_like_run(folder):
                    found[folder.name] = folder.stat().st_mtime
        if self.jobs.is_dir():
            for record in self.jobs.glob("*.json"):
                found.setdefault(record.stem, record.stat().st_mtime)
        return sorted(found, key=lambda n: -found[n])

    def states(self) -> list[RunState]:
        return [self.state(name) for name in self.names()]

    def state(self, name: str) -> RunState:
        """Where run ``name`` stands: from its folder, its job record and whether its process lives."""
        record = self._record(name)
        folder = Path(record["folder"]) if record else self.runs / name
        if record is None and not (folder.is_dir() and _looks_like_run(folder)):
            raise ConfigError(f"run {name!r}: no such run under {self.runs}")
        step = last_step(folder)
        pid = record.get("pid") if record else None
        alive = bool(pid) and process_alive(pid)
        origin = "ui" if record else "cli"
        if (folder / "metrics.json").is_file() and not alive:
            return RunState(name, folder, "finished", step, None, origin)
        if alive:
            status = "stopping" if record.get("stop_requested") else "running"
            return RunState(name, folder, status, step, pid, origin)
        if record is None and _recently_changed(folder):
            return RunState(name, folder, "running", step, None, origin, "started from the command line")
        if latest_checkpoint(folder) is not None:
            return RunState(name, folder, "stopped", step, None, origin, "a checkpoint is saved: resume continues")
        if record is not None:
            return RunState(name, folder, "failed", step, None, origin, self.error_line(name))
        return RunState(name, folder, "incomplete", step, None, origin, "no metrics.json and no checkpoint")

    def progress(self, name: str) -> dict[str, Any]:
        """The run's state, every training-log line so far and the end of its console."""
        state = self.state(name)
        return {**state.as_dict(), "log": read_log(state.folder), "console": self.console(name)}

    def console(self, name: str) -> str:
        path = self.jobs / f"{name}.log"
        if not path.is_file():
            return ""
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL:])

    def error_line(self, name: str) -> str:
        """The ``lmtune: error: ...`` line of a failed job (the CLI's own message), else its last line."""
        lines = self.console(name).splitlines()
        errors = [line for line in lines if line.startswith("lmtune:")]
        return (errors or lines or ["the training process ended without a message"])[-1]

    # ------------------------------------------------------------------ starting and stopping

    def start(self, cfg: RunConfig, resume: bool = False) -> RunState:
        """Check the run as ``lmtune train`` would, then start it in its own process.

        Raises:
            ConfigError: the run folder is in use by a running job, or a problem preflight finds
                (bad data, a folder already holding a run, nothing to resume), in the CLI's words.
        """
        from lmtune.preflight import preflight

        folder = Path(cfg.training.output_dir)
        name = folder.name
        for other in self.states():
            if other.status in ("running", "stopping") and other.folder.resolve() == folder.resolve():
                raise ConfigError(
                    f"training.output_dir: {folder} is in use by a running job ({other.name}); stop it first, "
                    "or set another training.output_dir"
                )
        record = self._record(name)
        if record and Path(record["folder"]) != folder.resolve():  # jobs are named by their folder's name
            raise ConfigError(
                f"training.output_dir: {folder}: a run named {name!r} ({record['folder']}) is already listed here; "
                "give the folder another name"
            )
        if cfg.stages:
            raise ConfigError("stages: run staged configs with `lmtune train` (the UI starts single runs)")
        preflight(cfg, overwrite=False, resume=resume)
        self.jobs.mkdir(parents=True, exist_ok=True)
        config = self.jobs / f"{name}.yaml"
        atomic_write_text(config, config_text(cfg))
        command = [sys.executable, "-m", "lmtune", "train", str(config)] + (["--resume"] if resume else [])
        log = (self.jobs / f"{name}.log").open("ab")
        log.write(f"$ lmtune train {config}{' --resume' if resume else ''}\n".encode())
        log.flush()
        # its own session: a Ctrl-C in the server's terminal must not reach the run (Stop sends its own)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        atomic_write_json(
            self.jobs / f"{name}.json",
            {"pid": process.pid, "folder": str(folder.resolve()), "config": str(config), "started": time.time()},
        )
        _reap_later(process)
        return self.state(name)

    def stop(self, name: str) -> RunState:
        """Ctrl-C for the run's process: lmtune saves a checkpoint of the last step and stops."""
        state = self.state(name)
        if state.status != "running" or state.pid is None:
            raise ConfigError(f"run {name!r}: not a running job of this UI (status {state.status})")
        os.kill(state.pid, signal.SIGINT)
        record = self._record(name) or {}
        atomic_write_json(self.jobs / f"{name}.json", {**record, "stop_requested": True})
        return self.state(name)

    def resume(self, name: str) -> RunState:
        """Start the run again with ``--resume`` from its latest checkpoint, with the config it ran with."""
        state = self.state(name)
        if state.status in ("running", "stopping"):
            raise ConfigError(f"run {name!r}: still running")
        config = self.jobs / f"{name}.yaml"
        if not config.is_file():
            config = state.folder / "config.yaml"  # a run started from the command line
        cfg = validate_config(read_yaml(config), str(config))
        return self.start(cfg, resume=True)

    def _record(self, name: str) -> dict[str, Any] | None:
        path = self.jobs / f"{name}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def read_log(folder: Path) -> list[dict[str, Any]]:
    path = folder / TRAIN_LOG
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written right now
            continue
    return rows


def last_step(folder: Path) -> int:
    rows = read_log(folder)
    return int(rows[-1].get("step", 0)) if rows else 0


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live lmtune process (a reused pid of another program is not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        text = cmdline.read_bytes().replace(b"\0", b" ")
        stat = Path(f"/proc/{pid}/stat").read_text()
        return b"lmtune" in text and ") Z" not in stat  # a zombie has exited already
    return True


def _reap_later(process: subprocess.Popen) -> None:
    """Wait for the child in a thread, so a finished run leaves no zombie behind while the server lives."""
    import threading

    threading.Thread(target=process.wait, daemon=True).start()


def _looks_like_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("config.yaml", TRAIN_LOG, "metrics.json"))


def _recently_changed(folder: Path) -> bool:
    newest = max((p.stat().st_mtime for p in folder.iterdir() if p.is_file()), default=0.0)
    return time.time() - newest < RECENT_S
