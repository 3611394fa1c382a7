"""export onnx --profile deepness: the file the QGIS plugin Deepness loads, read as the plugin reads it.

``plugin_reads`` re-implements, from the plugin's source (``deepness/processing/models/model_base.py``,
``segmentor.py``, ``preprocessing_utils.py`` and ``map_processor_segmentation.py``), what it does with
an ONNX file: each metadata value is decoded with ``json.loads`` (class names with a fallback to
``ast.literal_eval``), the type with ``str(...).capitalize()``, class ids sorted and required to be
consecutive from 0; tiles go in as NHWC values divided by 255, standardised by the metadata's mean
and std, transposed to NCHW; a 4-D output with more than one channel is per-class confidence, pixels
below the threshold zeroed, then the argmax.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bicorseg.checkpoint import load_checkpoint
from bicorseg.cli.main import main
from tests.helpers import require
from tests.helpers.inference import CLASSES, tiny_checkpoint

ort = require("onnxruntime")
require("onnx")

TILE = 64


def plugin_reads(path: Path) -> dict:
    """What the Deepness plugin takes from the model file (its rules, reimplemented)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert len(inputs) == 1  # "ONNX model: unsupported number of inputs" otherwise
    meta = session.get_modelmeta().custom_metadata_map
    found: dict = {"session": session, "input": inputs[0], "outputs": session.get_outputs()}
    found["model_type"] = str(json.loads(meta["model_type"])).capitalize()
    try:
        names = json.loads(meta["class_names"])
    except json.JSONDecodeError:
        names = ast.literal_eval(meta["class_names"])
    names = [names] if isinstance(names, dict) else names
    outputs = []
    for mapping in names:
        ordered = sorted(mapping.items(), key=lambda kv: int(kv[0]))
        assert [int(k) for k, _ in ordered] == list(range(len(ordered))), "class ids not consecutive"
        outputs.append([v for _, v in ordered])
    found["class_names"] = outputs
    found["resolution"] = float(json.loads(meta["resolution"]))
    found["tile_size"] = int(json.loads(meta["tile_size"]))
    found["tiles_overlap"] = int(json.loads(meta["tiles_overlap"]))
    found["mean"] = np.array([float(x) for x in json.loads(meta["standardization_mean"])], np.float32)
    found["std"] = np.array([float(x) for x in json.loads(meta["standardization_std"])], np.float32)
    found["seg_thresh"] = float(json.loads(meta["seg_thresh"]))
    found["seg_small_segment"] = int(json.loads(meta["seg_small_segment"]))
    found["bicorseg"] = json.loads(meta["bicorseg"])
    return found


def plugin_runs(found: dict, tiles_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plugin's preprocessing, the model's output and its segmentation step (class + 1, as it stores)."""
    channels = found["input"].shape[-3]
    batch = np.float32(tiles_nhwc[:, :, :, :channels] * 1.0 / 255.0)
    batch = (batch - found["mean"]) / found["std"]
    batch = np.transpose(batch, (0, 3, 1, 2))
    (output,) = found["session"].run(None, {found["input"].name: batch})
    result = output.copy()
    result[result < found["seg_thresh"]] = 0.0
    return output, np.argmax(result, axis=1) + 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("deepness")
    checkpoint = tiny_checkpoint(folder / "tiny.ckpt")
    output = folder / "model.onnx"
    args = ["export", "onnx", "--checkpoint", checkpoint, "--output", output, "--tile", str(TILE),
            "--profile", "deepness", "--overlap", "0.3", "--resolution", "25"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return checkpoint, output


@pytest.mark.slow
def test_the_plugin_reads_the_metadata_it_needs(exported) -> None:
    checkpoint, output = exported
    found = plugin_reads(output)
    spec = load_checkpoint(checkpoint).dataset
    assert found["model_type"] == "Segmentor"  # a member of the plugin's ModelType
    assert found["class_names"] == [list(CLASSES)]
    assert found["resolution"] == 25.0 and found["tile_size"] == TILE and found["tiles_overlap"] == 30
    np.testing.assert_allclose(found["mean"] * 255, spec.mean, rtol=1e-6)
    np.testing.assert_allclose(found["std"] * 255, spec.std, rtol=1e-6)
    assert found["seg_thresh"] == 0.0 and found["seg_small_segment"] == 0
    shape = found["input"].shape
    assert isinstance(shape[0], str) and list(shape[1:]) == [3, TILE, TILE]  # the user picks the batch size
    (out,) = found["outputs"]
    assert len(out.shape) == 4 and out.shape[-3] == len(CLASSES)  # per-class output: not read as sigmoid
    assert found["bicorseg"]["output"] == "probabilities" and found["bicorseg"]["tile"] == TILE
    # the plugin's installer pins onnxruntime<=1.17.0: ONNX IR version 9 and opset 20 at most
    import onnx

    graph = onnx.load(str(output))
    assert (
        graph.ir_version <= 9
        and max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) <= 20
    )


@pytest.mark.slow
def test_the_plugins_output_is_bicorsegs_softmax(exported) -> None:
    checkpoint, output = exported
    found = plugin_reads(output)
    tiles = np.random.default_rng(1).integers(0, 256, (2, TILE, TILE, 3)).astype(np.uint8)
    probabilities, classes = plugin_runs(found, tiles)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # sums to 1 over classes
    model = load_checkpoint(checkpoint).build_model().eval()
    spec = model.dataset
    normalised = (
        np.transpose(tiles, (0, 3, 1, 2)).astype(np.float32) - np.float32(spec.mean)[:, None, None]
    ) / (np.float32(spec.std)[:, None, None])
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(normalised)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    np.testing.assert_array_equal(classes - 1, expected.argmax(axis=1))  # no threshold: the argmax
    # bicorseg reads the same file: its logits are log p, so the predictor's softmax gives p back
    from bicorseg.inference.onnx import OnnxModel

    ours = OnnxModel(output)
    with torch.inference_mode():
        again = torch.softmax(ours(torch.from_numpy(normalised)), dim=1).numpy()
    np.testing.assert_allclose(again, expected, atol=1e-4)


def test_the_deepness_profile_needs_the_resolution(tmp_path, capsys) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    args = [
        "export",
        "onnx",
        "--checkpoint",
        checkpoint,
        "--output",
        tmp_path / "m.onnx",
        "--profile",
        "deepness",
    ]
    assert main([str(a) for a in args]) == 2
    assert "--resolution: the deepness profile needs the ground resolution" in capsys.readouterr().err
    assert main([str(a) for a in [*args, "--resolution", "-1"]]) == 2
    assert "--resolution: must be a positive number" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))
