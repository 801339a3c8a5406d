"""export / serve / chat on what is not a whole run: one line naming the argument and the file, exit status 2."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WEIGHTS = "adapter_model.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def damaged(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the tiny LoRA run: one whose adapter weights were deleted, one whose weights were cut short."""
    root = tmp_path_factory.mktemp("damaged")
    missing = Path(shutil.copytree(lora_run, root / "missing"))
    (missing / WEIGHTS).unlink()
    truncated = Path(shutil.copytree(lora_run, root / "truncated"))
    data = (truncated / WEIGHTS).read_bytes()
    (truncated / WEIGHTS).write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    return {"missing": missing, "truncated": truncated}


def command_line(verb: str, target: Path, tmp_path: Path) -> list[str]:
    extra = {"export": ["--output", str(tmp_path / "out")], "serve": ["--port", str(free_port())], "chat": []}
    return [sys.executable, "-m", "lmtune", verb, str(target), *extra[verb]]


@pytest.mark.parametrize("verb", ["export", "serve", "chat"])
@pytest.mark.parametrize(("damage", "words"), [("missing", "is missing"), ("truncated", "is damaged or cut short")])
def test_a_damaged_run_is_one_line_naming_the_folder_and_file(
    verb: str, damage: str, words: str, damaged: dict[str, Path], tmp_path: Path
) -> None:
    run = damaged[damage]
    cmd = command_line(verb, run, tmp_path)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    argument = "RUN" if verb == "export" else "MODEL"
    assert len(lines) == 1 and lines[0].startswith(f"lmtune: error: {argument} {run}: {WEIGHTS} {words}"), lines
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not (run / "export").exists()


def test_a_model_folder_with_cut_short_weights_is_refused_before_serving(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmtune.cli import main

    model = Path(shutil.copytree(tiny_llama_dir, tmp_path / "model"))
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:1000])
    assert main(["serve", str(model), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lmtune: error: MODEL {model}: model.safetensors is damaged or cut short ("), err


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["export", "{notes}", "--output", "{out}"], "RUN"),
        (["chat", "{notes}"], "MODEL"),
        (["serve", "{notes}", "--port", "{port}"], "MODEL"),
    ],
    ids=["export", "chat", "serve"],
)
def test_a_plain_file_is_named_as_the_commands_argument(
    argv: list[str], argument: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmtune.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("not a model", encoding="utf-8")
    where = {"notes": str(notes), "out": str(tmp_path / "x"), "port": str(free_port())}
    assert main([a.format(**where) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lmtune: error: {argument} {notes}: is a file, not a run folder, model folder or .gguf file"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "{missing}", "--output", "{out}"], "RUN {missing}: no such run folder, model folder or .gguf file"),
        (["chat", "{missing}"], "MODEL {missing}: no such file or folder"),
        (["serve", "{missing}", "--port", "{port}"], "MODEL {missing}: no such file or folder"),
    ],
    ids=["export", "chat", "serve"],
)
def test_a_missing_path_is_named_as_the_commands_argument(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmtune.cli import main

    where = {"missing": str(tmp_path / "missing"), "out": str(tmp_path / "x"), "port": str(free_port())}
    assert main([a.format(**where) for a in argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"lmtune: error: {message.format(**where)}"]


@pytest.mark.parametrize("verb", ["chat", "serve"])
def test_a_hub_id_that_cannot_load_is_named_as_the_commands_argument(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmtune.cli import main

    argv = [verb, "nobody-here/no-such-model", *(["--port", str(free_port())] if verb == "serve" else [])]
    assert main(argv) == 2  # the tests are offline (conftest)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("lmtune: error: MODEL 'nobody-here/no-such-model' is not a local folder"), lines
