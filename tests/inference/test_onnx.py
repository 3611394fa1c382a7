"""ONNX files that bicorseg did not export, or whose metadata is malformed, are one line naming the file."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import require
from tests.helpers.cli import refused
from tests.helpers.inference import onnx_model, random_image, write_geotiff

GOOD_CONFIG = {"num_classes": 3, "in_channels": 3}
ONNX_CASES = [
    ("no metadata", None, r"was not exported by bicorseg \(no 'bicorseg' metadata\)"),
    ("not JSON", "{model_config: ", r"invalid 'bicorseg' metadata: not JSON"),
    ("a JSON list", "[1, 2]", r"invalid 'bicorseg' metadata: expected a JSON object, got list"),
    ("no model config", '{"tile": 32}', r"model_config: missing or not an object"),
    (
        "tile is a string",
        json.dumps({"tile": "32", "model_config": GOOD_CONFIG}),
        r"tile: expected a positive integer, got '32'",
    ),
    (
        "classes are a float",
        '{"tile": 32, "model_config": {"num_classes": 2.5, "in_channels": 3}}',
        r"model_config\.num_classes: expected a positive integer, got 2\.5",
    ),
    (
        "dataset is malformed",
        '{"tile": 32, "model_config": {"num_classes": 3, "in_channels": 3}, "dataset": {"name": "x"}}',
        r"invalid 'bicorseg' metadata: dataset: ",
    ),
]


@pytest.mark.parametrize(("case", "meta", "message"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_metadata_problems_are_one_line(case, meta, message, tmp_path, capsys) -> None:
    model = onnx_model(tmp_path / "model.onnx", meta)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 16, 16))
    line = refused(
        capsys, "predict", image, "--engine", "onnx", "--checkpoint", model, "--output", tmp_path / "o"
    )
    assert "model.onnx" in line and re.search(message, line), line


def test_a_file_that_is_not_onnx_is_one_line(tmp_path, capsys) -> None:
    require("onnxruntime")
    fake = tmp_path / "model.onnx"
    fake.write_text("not a model\n" * 10)
    image = write_geotiff(tmp_path / "a.tif", random_image(3, 16, 16))
    line = refused(
        capsys, "predict", image, "--engine", "onnx", "--checkpoint", fake, "--output", tmp_path / "o"
    )
    assert "cannot read ONNX model" in line and "model.onnx" in line
