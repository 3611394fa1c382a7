"""The packages' names are imported on first use: importing the packages (and the shared facts of
``bicorseg.defaults``) loads neither torch nor Lightning; importing any module changes no global state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import sys
import bicorseg, bicorseg.defaults, bicorseg.losses, bicorseg.models, bicorseg.training
print("torch" in sys.modules, "lightning" in sys.modules)
print(bicorseg.models.ModelConfig.__module__, bicorseg.losses.LossConfig.__module__, bicorseg.load_model.__module__)
print("torch" in sys.modules, "lightning" in sys.modules)
for package in (bicorseg, bicorseg.models, bicorseg.losses, bicorseg.training):
    try:
        package.no_such_name
    except AttributeError as error:
        print(error)
"""


@pytest.mark.slow
def test_packages_import_their_names_on_first_use() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False False"  # nothing heavy at import
    assert lines[1] == "bicorseg.models.config bicorseg.losses.config bicorseg.checkpoint"
    assert lines[2] == "True False"  # the checkpoint module needs torch; none of them needs Lightning
    assert lines[3:] == [
        f"module {name!r} has no attribute 'no_such_name'"
        for name in ("bicorseg", "bicorseg.models", "bicorseg.losses", "bicorseg.training")
    ]


SIDE_EFFECTS = r"""
import importlib, pkgutil, sys, warnings
import matplotlib, numpy, PIL.Image, rasterio, torch, torchvision, torchmetrics, yaml
import lightning, lightning.pytorch
for optional in ("onnx", "onnxruntime", "onnxscript", "timm", "rich", "tensorboard"):
    try:
        importlib.import_module(optional)
    except ImportError:
        pass
backend = dict.__getitem__(matplotlib.rcParams, "backend")
pixels = PIL.Image.MAX_IMAGE_PIXELS
filters = list(warnings.filters)

import bicorseg
for module in pkgutil.walk_packages(bicorseg.__path__, "bicorseg."):
    importlib.import_module(module.name)
assert PIL.Image.MAX_IMAGE_PIXELS == pixels, ("Pillow limit", PIL.Image.MAX_IMAGE_PIXELS)
assert list(warnings.filters) == filters, ("warning filters", warnings.filters[:5])

# drawing the heatmap figure does not switch matplotlib's backend either
import numpy as np
from pathlib import Path
from bicorseg.inference.heatmaps import draw_figure
from bicorseg.inference.predictor import ModelInfo
draw_figure(Path(sys.argv[1]), np.zeros((8, 8, 3)), np.zeros((2, 2), np.uint8), np.zeros((2, 2, 2)),
            ModelInfo(2, 3, None, "m"), 1)
assert dict.__getitem__(matplotlib.rcParams, "backend") is backend, ("backend", matplotlib.rcParams["backend"])
assert Path(sys.argv[1]).stat().st_size > 0
print("unchanged")
"""


@pytest.mark.slow
def test_importing_bicorseg_changes_no_global_state(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SIDE_EFFECTS, str(tmp_path / "figure.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr[-2000:]
