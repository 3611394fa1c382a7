"""Helpers for the inference tests: real GeoTIFFs with a real CRS, tiny checkpoints, per-pixel models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from bicorseg.checkpoint import save_checkpoint
from bicorseg.cli.main import main
from bicorseg.models import BiCoRSeg
from bicorseg.spec import DatasetSpec
from tests.helpers import require
from tests.helpers.models import tiny_config

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.25, 0.25)
CLASSES = ("road", "building", "tree", "water")
PALETTE = ((128, 128, 128), (255, 0, 0), (0, 160, 0), (0, 0, 255))


def spec(bands: int = 3, mean: float = 120.0, std: float = 50.0) -> DatasetSpec:
    return DatasetSpec(
        name="test",
        class_names=CLASSES,
        palette=PALETTE,
        ignore_index=255,
        eval_classes=(0, 1, 2, 3),
        bands=tuple(f"b{i}" for i in range(bands)),
        mean=tuple(mean + 3.0 * i for i in range(bands)),
        std=tuple(std + 1.0 * i for i in range(bands)),
    )


def write_geotiff(path: Path, data: np.ndarray, nodata: float | None = None, **extra) -> Path:
    """A real GeoTIFF (EPSG:32633, 25 cm pixels) holding ``data`` (bands x H x W)."""
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
    )
    profile.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def random_image(bands: int, height: int, width: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    high = 255 if dtype == np.uint8 else 4000
    return np.random.default_rng(seed).integers(1, high, (bands, height, width)).astype(dtype)


def tiny_checkpoint(path: Path, bands: int = 3, **spec_options) -> Path:
    torch.manual_seed(0)
    model = BiCoRSeg(tiny_config(in_channels=bands), dataset=spec(bands, **spec_options))
    return save_checkpoint(model, path)


RGB = ("red", "green", "blue")


def rgb_checkpoint(path: Path) -> Path:
    """A tiny checkpoint whose bands are named red, green, blue (what STAC assets are matched by)."""
    torch.manual_seed(0)
    model = BiCoRSeg(
        tiny_config(), dataset=spec(3).with_bands(RGB, (120.0, 123.0, 126.0), (50.0, 51.0, 52.0))
    )
    return save_checkpoint(model, path)


def pixel_model(bands: int, classes: int = 4, seed: int = 0) -> nn.Module:
    """A per-pixel model (1x1 convolution): tiled and untiled results must agree exactly."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(bands, classes, 1)
    with torch.no_grad():
        conv.weight.mul_(3.0)  # confident, well-separated classes
    return conv.eval()


def direct_probabilities(model: nn.Module, normalised: np.ndarray) -> np.ndarray:
    """The untiled reference: softmax of the model on the whole image at once."""
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(normalised)[None]), 1)[0].numpy()


def onnx_model(path: Path, metadata: str | None, op: str = "Identity") -> Path:
    """A one-node ONNX graph (``op`` on a batch of 3 x 32 x 32 images) whose ``bicorseg`` metadata entry
    is ``metadata`` (none if None); the test is skipped without onnx and onnxruntime."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["image"], ["out"], **({"axis": 1} if op == "Softmax" else {}))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 32, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "bicorseg", metadata
    onnx.save(model, str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``bicorseg ARGV`` in this process: exit status, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
