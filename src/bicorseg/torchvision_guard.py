"""A torchvision that does not work with the installed torch is one line that says what to install.

torchvision's compiled operators are built for one torch release and one build of it (CPU, or one
CUDA version). A pair from two places, typically torch from PyTorch's CPU index and torchvision from
PyPI when that index became unreachable half-way through an installation, fails deep inside
torchvision's own import (``RuntimeError: operator torchvision::nms does not exist``, a 30-line
traceback), whoever imports it first: bicorseg's models, torchmetrics, Lightning or timm.

:func:`install` (run by ``import bicorseg``) puts one finder first on ``sys.meta_path`` that answers
for ``torchvision`` alone: it finds torchvision as the other finders would and watches the
execution of its ``__init__``. When that fails, the error becomes an
:class:`~bicorseg.errors.InstallError` naming both versions, where that torchvision is, and the
command that installs the matching one (docs/install.md). Nothing is imported to check, and a
torchvision that imports is left exactly as it was loaded.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bicorseg.errors import InstallError, first_line

TORCH_INDEX = "https://download.pytorch.org/whl"  # PyTorch's wheel indexes: /cpu, /cu126, ...


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release made for a torch release: torch 2.X.Y -> torchvision 0.(X+15).Y.

    Every pair PyPI publishes from torch 2.1 to 2.14 follows this rule (each torchvision wheel pins
    its torch; docs/install.md lists them). None for a version the rule does not cover.
    """
    match = re.match(r"^2\.(\d+)\.(\d+)", torch_version)
    if match is None or int(match.group(1)) < 1:
        return None
    return f"0.{int(match.group(1)) + 15}.{match.group(2)}"


def _installed_version(package_dir: Path | None) -> str:
    """The version in a torchvision package's own ``version.py`` (the code that was imported)."""
    if package_dir is not None:
        try:
            text = (package_dir / "version.py").read_text(encoding="utf-8")
        except OSError:
            text = ""
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if match:
            return match.group(1)
    return "(unknown version)"


def mismatch_message(error: BaseException, package_dir: Path | None) -> str:
    """One line: what failed, both versions, and the pip command that installs the matching torchvision."""
    torch_version = str(getattr(sys.modules.get("torch"), "__version__", "(not imported)"))
    where = f" ({package_dir})" if package_dir is not None else ""
    release, _, build = torch_version.partition("+")
    wanted = matching_torchvision(release)
    pin = f"torchvision=={wanted}" if wanted else "the torchvision release made for it"
    # the build torch came from (cpu, cu126...) names the index the matching torchvision is on
    if build:
        index = f"{TORCH_INDEX}/{build}"
        command = f"pip install --force-reinstall --no-deps {pin} --index-url {index}"
        fallback = (
            f"; if {index} cannot be reached, install PyPI's pair instead: pip install --force-reinstall "
            f"torch=={release} {pin}"
        )
    else:
        command, fallback = f"pip install --force-reinstall --no-deps {pin}", ""
    return (
        f"torchvision {_installed_version(package_dir)}{where} does not work with torch {torch_version} "
        f"({first_line(error)}): they come from different builds; install the matching torchvision: "
        f"{command}{fallback} (docs/install.md)"
    )


class TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Finds ``torchvision`` through the other finders and watches its import (module docstring)."""

    def __init__(self) -> None:
        self.first_error: BaseException | None = None

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision":
            return None
        others = (
            f for f in sys.meta_path if not isinstance(f, TorchvisionFinder) and hasattr(f, "find_spec")
        )
        spec = next((s for f in others if (s := f.find_spec(fullname, path, target)) is not None), None)
        if spec is None or spec.loader is None:
            return spec  # not installed: Python's own ModuleNotFoundError says so
        loader, package_dir = spec.loader, Path(spec.origin).parent if spec.origin else None
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            del loader.exec_module  # torchvision's own loader, as it was, once it has run
            try:
                execute(module)
            except InstallError:
                raise
            except Exception as error:  # whatever torchvision's import raises: operators, symbols, attributes
                # a library that caught the first failure tries again and fails on the half-imported
                # package instead: the first failure says why
                self.first_error = self.first_error or error
                raise InstallError(mismatch_message(self.first_error, package_dir)) from None

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Watch the first import of torchvision in this process (once; nothing if it is imported already)."""
    if "torchvision" in sys.modules or any(isinstance(f, TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, TorchvisionFinder())
