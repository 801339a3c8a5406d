"""The import contracts of pyproject.toml hold: lmtune's layers, and no import cycle anywhere in it.

``lint-imports`` (import-linter) reads the contracts from pyproject.toml and every import of the package,
those inside functions included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from helpers import REPO_ROOT

CONTRACTS = {"layers", "no cycles", "no cycles through a package's __init__"}
# import-linter has no ``python -m`` entry point; this is what its ``lint-imports`` script runs
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def declared_contracts() -> set[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {contract["name"] for contract in config["tool"]["importlinter"]["contracts"]}


def lint_imports() -> subprocess.CompletedProcess:
    # this checkout's src first: an editable install elsewhere must not be the tree that is checked
    path = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--config", "pyproject.toml", "--no-cache"],
        cwd=REPO_ROOT,  # contract_types imports tools.lint.import_cycles from here
        env={**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_are_the_layers_and_no_cycles():
    """Removing or renaming a contract is a decision, made here as well as in pyproject.toml."""
    assert declared_contracts() == CONTRACTS


def test_lint_imports_keeps_every_contract():
    result = lint_imports()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for name in CONTRACTS:
        assert f"{name} KEPT" in out, out
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in out
