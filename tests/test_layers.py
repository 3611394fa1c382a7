"""The layers of docs/ARCHITECTURE.md, written once as import-linter contracts in pyproject.toml.

The contracts (layers, no circles between the modules of a package, Lightning only in the training
layer) are checked over every import, inside functions too, of the package these tests import;
then over a copy with one upward import and one circle added, which must break them.
"""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bicorseg
from tests.helpers import require

SOURCE = Path(bicorseg.__file__).resolve().parent.parent  # the src folder of the package under test
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def lint_imports(source: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts over the package found in ``source``."""
    require("importlinter")
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", command, "--config", str(PYPROJECT), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    result = lint_imports(SOURCE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The contracts' report on a copy of the package with an upward import and a circle added."""
    root = tmp_path_factory.mktemp("src")
    shutil.copytree(SOURCE / "bicorseg", root / "bicorseg", ignore=shutil.ignore_patterns("__pycache__"))
    upward = "def run():\n    from bicorseg.cli.predict import register  # inside a function\n"
    (root / "bicorseg" / "models" / "upward.py").write_text(upward)
    for name, other in (("first", "second"), ("second", "first")):  # a circle
        (root / "bicorseg" / "gis" / f"{name}.py").write_text(f"from bicorseg.gis import {other}\n")
    with (root / "bicorseg" / "metrics.py").open("a") as metrics:
        metrics.write("\nimport lightning\n")
    result = lint_imports(root, root)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


def test_an_upward_import_inside_a_function_breaks_the_layers(broken: str) -> None:
    assert "bicorseg.models is not allowed to import bicorseg.cli" in broken
    assert "bicorseg.models.upward -> bicorseg.cli.predict" in broken


def test_a_circle_breaks_the_contract(broken: str) -> None:
    assert "No cycles are allowed in bicorseg.gis" in broken
    assert ".first -> .second" in broken or ".second -> .first" in broken


def test_lightning_outside_the_training_layer_breaks_the_contract(broken: str) -> None:
    assert "bicorseg.metrics -> lightning" in broken


def test_every_module_of_the_package_has_a_layer() -> None:
    """A new module or package of ``bicorseg`` is placed in the order, so the contracts see it."""
    contracts = require("importlinter.api").read_configuration(str(PYPROJECT))["contracts_options"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    children = {module.name for module in pkgutil.iter_modules([str(SOURCE / "bicorseg")])}
    assert children - placed == set()
    assert "models" in placed
