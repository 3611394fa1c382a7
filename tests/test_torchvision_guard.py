"""A torchvision that does not work with the installed torch is one line saying what to install.

The failing torchvision is the installed one, its files linked into a folder placed first on the
path, without its compiled operators (``_C*.so``): torchvision then fails inside its own import
exactly as a wheel built for another torch or CUDA does (its operators do not load, and registering
``torchvision::nms`` raises ``RuntimeError: operator torchvision::nms does not exist``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import bicorseg
from bicorseg.torchvision_guard import matching_torchvision, mismatch_message

SRC = Path(bicorseg.__file__).resolve().parents[1]


def torchvision_without_operators(folder: Path) -> Path:
    """The installed torchvision's files linked under ``folder``, its compiled operators left out."""
    source = Path(torchvision.__file__).resolve().parent
    package = folder / "torchvision"
    package.mkdir(parents=True)
    left_out = []
    for entry in source.iterdir():
        if entry.name.startswith("_C") and entry.suffix in (".so", ".pyd"):
            left_out.append(entry.name)
        elif entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    assert left_out, f"no compiled operators in {source}"
    return folder


def run_python(args: list[str], first_on_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(first_on_path), str(SRC)])}
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_a_torchvision_without_its_operators_is_one_line_naming_versions_and_command(tmp_path) -> None:
    broken = torchvision_without_operators(tmp_path / "site")
    # the raw failure first: what users saw without the guard
    raw = run_python(["-c", "import torchvision"], broken, tmp_path)
    assert raw.returncode != 0 and "operator torchvision::nms does not exist" in raw.stderr
    assert len(raw.stderr.splitlines()) > 10

    # evaluate's first import of torchvision is torchmetrics'; the guard answers for every importer
    cli = run_python(
        ["-m", "bicorseg.cli.main", "evaluate", "--checkpoint", "x.pt", "--dataset", "synthetic"],
        broken,
        tmp_path,
    )
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1, cli.stderr
    line = lines[0]
    assert line.startswith("bicorseg evaluate: error: torchvision ")
    assert f"torch {torch.__version__}" in line and f"torchvision {torchvision.__version__}" in line
    assert str(broken / "torchvision") in line
    assert "operator torchvision::nms does not exist" in line
    release = torch.__version__.split("+")[0]
    assert f"torchvision=={matching_torchvision(release)}" in line
    assert "pip install --force-reinstall" in line

    # the Python API raises the same InstallError (an ImportError), not torchvision's RuntimeError
    api = run_python(["-c", "import bicorseg.checkpoint"], broken, tmp_path)
    assert api.returncode == 1
    assert api.stderr.strip().splitlines()[-1].startswith("bicorseg.errors.InstallError: torchvision ")
    assert "RuntimeError" not in api.stderr

    # a torchvision that works is imported as it is, its own loader kept
    check = (
        "import bicorseg, sys, torchvision; "
        "from bicorseg.torchvision_guard import TorchvisionFinder; "
        "assert any(isinstance(f, TorchvisionFinder) for f in sys.meta_path); "
        "assert type(torchvision.__loader__).__name__ == 'SourceFileLoader'; "
        "assert torchvision.__spec__.loader is torchvision.__loader__; "
        "torchvision.ops.nms"
    )
    assert run_python(["-c", check], tmp_path / "empty", tmp_path).returncode == 0


def test_the_rule_gives_every_known_good_pair_of_the_install_page() -> None:
    page = (SRC.parent / "docs" / "install.md").read_text(encoding="utf-8")
    pairs = dict(re.findall(r"^\| (2\.\d+\.\d+) \| (0\.\d+\.\d+)", page, re.MULTILINE))
    assert len(pairs) >= 10 and pairs["2.6.0"] == "0.21.0"
    assert {t: matching_torchvision(t) for t in pairs} == pairs
    assert matching_torchvision("1.13.1") is None and matching_torchvision("3.0.0") is None


def test_the_command_follows_the_build_of_torch(monkeypatch) -> None:
    error = RuntimeError("operator torchvision::nms does not exist")
    monkeypatch.setattr(torch, "__version__", "2.6.0+cpu")
    line = mismatch_message(error, None)
    assert (
        "pip install --force-reinstall --no-deps torchvision==0.21.0 "
        "--index-url https://download.pytorch.org/whl/cpu" in line
    )
    assert (
        "install PyPI's pair instead: pip install --force-reinstall torch==2.6.0 torchvision==0.21.0" in line
    )
    monkeypatch.setattr(torch, "__version__", "2.6.0")  # PyPI's torch: PyPI's torchvision
    line = mismatch_message(error, None)
    assert line.endswith("pip install --force-reinstall --no-deps torchvision==0.21.0 (docs/install.md)")
    assert "\n" not in line
