"""The layering of docs/ARCHITECTURE.md: Lightning is imported only by the training layer.

That is ``training/``, the ``train`` command that drives it, and the demo's callbacks; the core
(models, losses, metrics, data, inference, checkpoints), the demo's orchestration, the report and
the GIS tools never import it, not even inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bicorseg

PACKAGE = Path(bicorseg.__file__).resolve().parent
LIGHTNING_ALLOWED = ("training/", "cli/train.py", "demo/callbacks.py")


def lightning_imports(path: Path) -> list[int]:
    """Line numbers of every ``import lightning...`` / ``from lightning... import`` in a file (nested too)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        if any(name.split(".")[0] in ("lightning", "pytorch_lightning") for name in names):
            lines.append(node.lineno)
    return lines


def test_lightning_only_in_the_training_layer() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(LIGHTNING_ALLOWED):
            continue
        if lines := lightning_imports(path):
            offenders[relative] = lines
    assert offenders == {}, f"Lightning imported outside {LIGHTNING_ALLOWED}: {offenders}"


def test_the_scan_finds_lightning_imports() -> None:
    assert lightning_imports(PACKAGE / "demo" / "callbacks.py")  # the allowed module does import it


def bicorseg_imports(path: Path) -> set[str]:
    """Every ``bicorseg...`` module a file imports (nested imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] == "bicorseg"}


def test_the_network_imports_nothing_above_it() -> None:
    """models/ stands on the shared facts, errors and readers only: never on checkpoints or inference."""
    below = ("bicorseg.models", "bicorseg.errors", "bicorseg.defaults", "bicorseg.spec", "bicorseg.lazy",
             "bicorseg.torch_files", "bicorseg.typedconfig")  # fmt: skip
    upward = {
        path.name: sorted(name for name in bicorseg_imports(path) if not name.startswith(below))
        for path in sorted((PACKAGE / "models").glob("*.py"))
    }
    assert {name: found for name, found in upward.items() if found} == {}
    assert "bicorseg.torch_files" in bicorseg_imports(PACKAGE / "models" / "backbone.py")  # the scan sees it
