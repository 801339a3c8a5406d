"""The extras: lmtune[serve], [ui], [privacy], [sweep], [gguf], [int8] and [all].

A feature whose packages are missing stops at its entry with one line that names the extra to
install, exit status 2 and no traceback, before anything is created. The missing package is
simulated as Python sees one that is not installed: ``None`` in ``sys.modules`` makes
``importlib.util.find_spec`` answer None and ``import`` fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EVAL_ROWS, REPO_ROOT, TRAIN_ROWS, tiny_run_raw, write_jsonl
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lmtune.cli import main
from lmtune.errors import MissingExtraError
from lmtune.extras import EXTRAS, missing, require

OWN_MODULES = ("lmtune.shipping.gguf", "lmtune.shipping.serve.app", "lmtune.ui.app")
"""The modules that import an extra's packages at their top: only the feature's entry imports them."""


def without(monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    """The packages of ``extra`` as if they were not installed (for this test)."""
    for module in EXTRAS[extra]:
        monkeypatch.setitem(sys.modules, module, None)


def the_one_line(capsys: pytest.CaptureFixture[str], extra: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert len(err.splitlines()) == 1, err
    line = err.strip()
    assert line.startswith("lmtune: error: ")
    assert f" needs the {extra} extra: pip install 'lmtune[{extra}]' (missing: " in line
    return line.removeprefix("lmtune: error: ")


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_raw(model: Path | str, root: Path) -> dict[str, Any]:
    train = write_jsonl(root / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    return tiny_run_raw(Path(model), train, held_out, root / "run")


# --------------------------------------------------------------------------- the table and pyproject.toml


def test_pyproject_has_every_extra_of_the_table_and_all_gathers_them() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        assert {canonicalize_name(Requirement(r).name) for r in optional[extra]} == {
            canonicalize_name(m) for m in modules
        }, extra
    (gathered,) = [Requirement(r) for r in optional["all"]]
    assert gathered.name == "lmtune" and gathered.extras == set(EXTRAS)
    assert any(Requirement(r).name == "lmtune" and "all" in Requirement(r).extras for r in optional["dev"])
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert not core & {m for modules in EXTRAS.values() for m in modules}  # moved out, not copied


def test_require_names_the_extra_and_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    require("serve", what="lmtune serve")  # installed here: nothing happens
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert missing("serve") == ["uvicorn"]
    with pytest.raises(MissingExtraError) as caught:
        require("serve", what="lmtune serve")
    assert str(caught.value) == "lmtune serve needs the serve extra: pip install 'lmtune[serve]' (missing: uvicorn)"
    assert caught.value.exit_code == 2


def test_the_core_imports_and_runs_without_any_extra(tmp_path: Path) -> None:
    """In a fresh interpreter with every extra's packages missing: each other module imports, the CLI runs."""
    src = REPO_ROOT / "src"
    names = sorted(".".join(p.relative_to(src).with_suffix("").parts) for p in (src / "lmtune").rglob("*.py"))
    names = [n.removesuffix(".__init__") for n in names if n != "lmtune.__main__"]
    core = [n for n in names if not n.startswith(OWN_MODULES)]
    blocked = sorted({m for modules in EXTRAS.values() for m in modules})
    script = (
        "import importlib, sys\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}, None))\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "from lmtune.cli import main\n"
        f"assert main(['data', 'demo', {str(tmp_path / 'demo')!r}]) == 0\n"
        "assert main(['export', 'RUN', '--output', 'OUT', '--quant', 'q4_0']) == 2\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", script, *core], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "demo" / "train.jsonl").is_file()
    # the GGUF types are known without the gguf package, for the message of a --format hf export
    assert "--quant q4_0: not a quantisation of --format hf (choose int8; GGUF types f32, f16" in proc.stderr


# --------------------------------------------------------------------------- each feature's entry


def test_serve_without_the_serve_extra(lora_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = shutil.copytree(lora_run, tmp_path / "run")  # serve would merge it into run/export first
    without(monkeypatch, "serve")
    assert main(["serve", str(run), "--port", "8000"]) == 2
    line = the_one_line(capsys, "serve")
    assert line == "lmtune serve needs the serve extra: pip install 'lmtune[serve]' (missing: fastapi, uvicorn)"
    assert not (run / "export").exists()


def test_ui_without_the_ui_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    without(monkeypatch, "ui")
    assert main(["ui", "--runs", str(tmp_path / "runs"), "--port", "7860"]) == 2
    assert the_one_line(capsys, "ui").startswith("lmtune ui needs the ui extra")
    assert list(tmp_path.iterdir()) == []


def test_private_training_without_the_privacy_extra(tiny_llama_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    raw = run_raw(tiny_llama_dir, tmp_path)
    raw["training"]["packing"] = False
    raw["privacy"] = {"noise_multiplier": 0.5, "accountant": "rdp"}
    config = write_config(tmp_path / "private.yaml", raw)
    without(monkeypatch, "privacy")
    assert main(["train", str(config)]) == 2
    assert the_one_line(capsys, "privacy").startswith("privacy: DP-SGD training needs the privacy extra")
    assert not (tmp_path / "run").exists()


def test_sweep_without_the_sweep_extra(tiny_llama_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    raw = run_raw(tiny_llama_dir, tmp_path)
    raw["training"].update({"max_steps": 2, "plan": False, "eval_strategy": "steps", "eval_steps": 1})
    raw["eval"].update({"base": False, "reference": None, "metrics": ["perplexity"]})
    raw["sweep"] = {"objective": "eval_loss", "space": {"lora.r": [2, 4]}}
    config = write_config(tmp_path / "sweep.yaml", raw)
    without(monkeypatch, "sweep")
    assert main(["sweep", str(config), "--trials", "1"]) == 2
    assert the_one_line(capsys, "sweep").startswith("lmtune sweep needs the sweep extra")
    assert not (tmp_path / "run").exists()  # the sweep folder (and its study.db)


@pytest.mark.parametrize(
    ("extra", "options", "what"),
    [
        ("gguf", ["--format", "gguf"], "lmtune export --format gguf"),
        ("int8", ["--quant", "int8"], "lmtune export --quant int8"),
    ],
)
def test_export_without_its_extra(lora_run: Path, tmp_path: Path, monkeypatch, capsys, extra, options, what) -> None:
    without(monkeypatch, extra)
    assert main(["export", str(lora_run), "--output", str(tmp_path / "out"), *options]) == 2
    assert the_one_line(capsys, extra).startswith(f"{what} needs the {extra} extra")
    assert list(tmp_path.iterdir()) == []  # no output folder, no staging folder next to it


def fake_gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + bytes(60))  # the magic bytes: past lmtune's own check, to the reading
    return path


def test_training_on_a_gguf_model_without_the_gguf_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LMTUNE_CACHE", str(tmp_path / "cache"))  # no cached copy of it
    model = fake_gguf(tmp_path / "model.gguf")
    config = write_config(tmp_path / "run.yaml", run_raw(model, tmp_path))
    without(monkeypatch, "gguf")
    assert main(["train", str(config)]) == 2
    assert the_one_line(capsys, "gguf").startswith(f"model.name: {model}: reading a GGUF model needs the gguf extra")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_embedded_model_without_the_gguf_extra(embedded_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The default model is a GGUF file: its first reading needs the extra, its cached copy does not."""
    from lmtune.models import resolve

    without(monkeypatch, "gguf")
    assert resolve("smollm2-135m-instruct") == embedded_dir  # the session's cached copy
    monkeypatch.setenv("LMTUNE_CACHE", str(tmp_path / "cache"))
    assert main(["generate", "--prompt", "Hello"]) == 2
    line = the_one_line(capsys, "gguf")
    assert line.startswith("model.name: smollm2-135m-instruct: reading a GGUF model needs the gguf extra")
    assert not (tmp_path / "cache").exists()


def test_loading_an_int8_export_without_the_int8_extra(tiny_llama_dir: Path, tmp_path: Path, monkeypatch, capsys):
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "int8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = {"quant_method": "torchao", "quant_type": {"default": "Int8WeightOnlyConfig"}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    without(monkeypatch, "int8")
    assert main(["generate", "--model", str(folder), "--prompt", "Hello"]) == 2
    line = the_one_line(capsys, "int8")
    assert line.startswith(f"model.name: {folder}: loading an int8 (torchao) model needs the int8 extra")
