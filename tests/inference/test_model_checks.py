"""No map of real classes from a model that cannot make one: normalisation statistics no band has,
weights that overflow, an ONNX graph whose output is not what its metadata says are refused in one
line (exit 2, nothing written); a pixel where the model gives no finite value is nodata, counted in
one line, never class 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from bicorseg.checkpoint import read_torch_file
from bicorseg.cli.main import main
from bicorseg.errors import CheckpointError, ConfigError
from bicorseg.inference.model_info import ModelInfo
from bicorseg.inference.predictor import PredictOptions, Predictor
from bicorseg.spec import DatasetSpec
from tests.helpers import prints_warnings
from tests.helpers.cli import refused
from tests.helpers.inference import onnx_model, random_image, spec, write_geotiff


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of the checkpoint ``source`` with ``change(data)`` applied to its dictionary."""
    data = read_torch_file(source)
    change(data)
    torch.save(data, target)
    return target


@pytest.mark.parametrize(
    ("mean", "std", "message", "stored"),
    [
        (math.nan, 50.0, r"band 1 has mean nan and std 50\.0: both must be finite",
         r"metadata: mean\[0\]: must be a finite number, got nan"),
        (120.0, math.inf, r"band 1 has mean 120\.0 and std inf: both must be finite",
         r"metadata: std\[0\]: must be a finite number, got inf"),
        (120.0, 0.0, r"band 1 has std 0\.0: it must be at least 1e-06", None),
        (120.0, 1e-12, r"band 1 has std 1e-12: it must be at least 1e-06", None),
        (1e30, 50.0, r"band 1 has mean 1e\+30 and std 50\.0: no band's values reach 1e\+12", None),
    ],
)  # fmt: skip
def test_statistics_no_band_has_are_refused(mean, std, message, stored, tmp_path, checkpoint, capsys) -> None:
    def change(data: dict) -> None:
        data["dataset"]["mean"] = [mean, *data["dataset"]["mean"][1:]]
        data["dataset"]["std"] = [std, *data["dataset"]["std"][1:]]

    bad = rewritten(checkpoint, tmp_path / "bad.ckpt", change)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 32, 32))
    line = refused(
        capsys, "predict", image, "--checkpoint", bad, "--output", tmp_path / "out", "--tile", "32"
    )
    # a value that is not a finite number is refused as the stored key's, a finite one as the band's statistic
    expected = stored or rf"metadata: dataset .*{message}"
    assert "bad.ckpt has invalid metadata: " in line and __import__("re").search(expected, line), line
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=message):  # given by the user (a config, the Python API)
        DatasetSpec(**{**spec(3).to_dict(), "mean": (mean, 1.0, 1.0), "std": (std, 1.0, 1.0)})


@pytest.mark.slow
def test_finite_weights_that_overflow_are_refused(tmp_path, checkpoint, capsys) -> None:
    def change(data: dict) -> None:
        for key, value in data["state_dict"].items():
            if value.is_floating_point() and value.dim() > 1:
                data["state_dict"][key] = value * 1e19  # finite, but the activations are not

    huge = rewritten(checkpoint, tmp_path / "huge.ckpt", change)
    assert all(
        torch.isfinite(v).all() for v in read_torch_file(huge)["state_dict"].values() if v.is_floating_point()
    )
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 32, 32))
    for precision in ("fp32", "bf16"):
        line = refused(capsys, "predict", image, "--checkpoint", huge, "--output", tmp_path / "out",
                       "--tile", "32", "--precision", precision)  # fmt: skip
        assert f"huge.ckpt: the model's logits on a test tile are not finite at precision {precision}" in line
    assert not (tmp_path / "out").exists()


def _onnx(path: Path, op: str, output: str) -> Path:
    meta = {"tile": 32, "model_config": {"num_classes": 3, "in_channels": 3}, "output": output}
    return onnx_model(path, json.dumps(meta), op)


@pytest.mark.parametrize(
    ("op", "output", "message"),
    [
        (
            "Identity",
            "probabilities",
            r"its metadata says the graph gives probabilities, but its output is not",
        ),
        ("Softmax", "logits", r"its metadata says the graph gives logits, but its output is probabilities"),
    ],
)
@prints_warnings
def test_an_onnx_output_unlike_its_metadata_is_refused(op, output, message, tmp_path, capsys) -> None:
    model = _onnx(tmp_path / "model.onnx", op, output)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 32, 32))
    code = main([str(a) for a in ["predict", image, "--engine", "onnx", "--checkpoint", model, "--output",
                                   tmp_path / "out"]])  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    line = lines[-1]  # after the warning that the file carries no normalisation
    assert code == 2 and "error:" in line and all("warning:" in other for other in lines[:-1]), lines
    assert "model.onnx" in line and __import__("re").search(message, line), line
    assert not (tmp_path / "out").exists()
    _onnx(tmp_path / "good.onnx", "Softmax", "probabilities")  # the same graph with the right word runs
    code = main([str(a) for a in ["predict", image, "--engine", "onnx", "--checkpoint", tmp_path / "good.onnx",
                                   "--output", tmp_path / "good", "--quiet"]])  # fmt: skip
    assert code == 0, capsys.readouterr().err


class BrightIsNaN(nn.Module):
    """Per-pixel logits, NaN where band 1 is brighter than the normalised value 2.5 (never in the
    test tile, which stays within -2..2, so the model passes the load-time check)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv(x)
        return torch.where(x[:, :1] > 2.5, torch.full_like(logits, math.nan), logits)


def test_pixels_without_a_finite_output_are_nodata_and_counted(tmp_path) -> None:
    data = random_image(3, 64, 64, seed=1)
    data[0] = np.minimum(data[0], 200)  # (200 - 120) / 50 = 1.6: finite logits
    data[0, 10:20, 30:45] = 255  # (255 - 120) / 50 = 2.7: NaN logits there
    source = write_geotiff(tmp_path / "in" / "scene.tif", data)
    torch.manual_seed(0)
    predictor = Predictor(
        BrightIsNaN().eval(), ModelInfo(4, 3, spec(3), "nan-model"), PredictOptions(tile=32)
    )
    with pytest.warns(UserWarning, match=r"scene\.tif: 150 pixel\(s\) where the model gave no finite value"):
        result = predictor.predict_file(source, tmp_path / "out")
    assert result.nonfinite == 150
    with rasterio.open(tmp_path / "out" / "scene.tif") as out:
        classes = out.read(1)
    assert (classes[10:20, 30:45] == 255).all()  # nodata, not class 0
    outside = np.ones_like(classes, bool)
    outside[10:20, 30:45] = False
    assert (classes[outside] < 4).all()


def test_the_check_runs_before_a_predictor_writes_anything(tmp_path) -> None:
    class Overflow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x.repeat(1, 2, 1, 1)[:, :4] * 1000.0)  # inf on any real tile

    predictor = Predictor(Overflow(), ModelInfo(4, 3, spec(3), "overflow-model"), PredictOptions(tile=32))
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 32, 32))
    with pytest.raises(
        CheckpointError, match="overflow-model: the model's logits on a test tile are not finite"
    ):
        predictor.predict_file(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_engine_that_is_not_torch_or_onnx_is_refused(checkpoint) -> None:
    from bicorseg.inference.predictor import checkpoint_info

    with pytest.raises(ConfigError, match="engine: must be one of torch, onnx; got 'tensorrt'"):
        checkpoint_info(checkpoint, "tensorrt")
    with pytest.raises(ConfigError, match="engine: must be one of torch, onnx; got 'tensorrt'"):
        Predictor.from_checkpoint(checkpoint, PredictOptions(device="cpu"), "tensorrt")
