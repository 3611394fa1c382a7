"""ONNX export at a fixed tile size, checked against onnxruntime, and an ONNX model usable for prediction.

:func:`export_onnx` writes a graph ``image (B x bands x T x T, normalised) -> logits (B x N x T x T)``
with a dynamic batch size and the checkpoint's metadata (model configuration, dataset facts, tile
size) in the file's ``metadata_props`` under ``bicorseg``, so that the ``.onnx`` file alone is
enough for ``bicorseg predict --engine onnx``. :class:`OnnxModel` runs such a file with onnxruntime
like the PyTorch model: smaller tiles are padded (by reflection where possible) and cropped back.
The ``deepness`` profile (:data:`PROFILES`) writes a graph for the QGIS plugin Deepness: what it
holds, and why, is in ``docs/gis.md`` (QGIS: the Deepness plugin); each metadata value is
JSON-encoded, as the plugin decodes it (``json.loads`` per key).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bicorseg.atomic import OutputGroup
from bicorseg.defaults import STRIDE
from bicorseg.errors import CheckpointError, ConfigError, first_line, require_extra
from bicorseg.inference.model_info import ModelInfo, model_info
from bicorseg.inference.raster_io import statistics
from bicorseg.inference.tiling import check_overlap
from bicorseg.models.hub import Tiling, metadata
from bicorseg.spec import DatasetSpec

METADATA_KEY = "bicorseg"
DEFAULT_OPSET = 18
TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-3  # how far softmax outputs may stray from [0, 1] and from summing to 1
PROFILES = ("bicorseg", "deepness")
OUTPUTS = ("logits", "probabilities")
# the plugin's package installer pins onnxruntime<=1.17.0, which reads ONNX IR version 9 and opset 20
DEEPNESS_IR_VERSION = 9
DEEPNESS_MAX_OPSET = 20


class _Probabilities(torch.nn.Module):
    """A model's class probabilities (softmax over the class axis) instead of its logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def deepness_metadata(info: ModelInfo, tile: int, overlap: float, resolution_cm: float) -> dict[str, str]:
    """The metadata the Deepness plugin reads (keys and JSON values; see the module docstring)."""
    mean, std = (np.asarray(values, np.float32) for values in statistics(info))
    return {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): name for i, name in enumerate(info.class_names)}),
        "resolution": json.dumps(float(resolution_cm)),  # cm per pixel: the plugin resamples to it
        "tile_size": json.dumps(int(tile)),  # what its code reads (its documentation says tiles_size)
        "tiles_overlap": json.dumps(round(100 * overlap)),
        # the plugin divides pixel values by 255 first: the model sees (x - mean) / std, 16-bit too
        "standardization_mean": json.dumps([float(m) / 255.0 for m in mean]),
        "standardization_std": json.dumps([float(s) / 255.0 for s in std]),
        "seg_thresh": json.dumps(0.0),
        "seg_small_segment": json.dumps(0),
    }


def _require_onnx() -> list[Any]:
    return require_extra("export", ("onnx", "onnxruntime"), "ONNX support")


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    tile: int | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    profile: str = "bicorseg",
    overlap: float | None = None,
    resolution_cm: float | None = None,
) -> float:
    """Export a checkpoint to ONNX at ``tile x tile`` (default: the checkpoint's tile) and return the max
    |output difference| to PyTorch.

    With ``check`` (default) onnxruntime runs a random batch of 2 and the export fails with a
    :class:`CheckpointError` if any output differs from PyTorch's by more than 1e-4. The file is
    written to a temporary name and renamed when checked. ``profile="deepness"`` writes softmax
    probabilities and the Deepness plugin's metadata (module docstring) with ``overlap`` (fraction
    of the tile) and ``resolution_cm`` (centimetres per pixel, required: checkpoints do not record it).
    """
    onnx, _ = _require_onnx()
    from bicorseg.checkpoint import load_checkpoint

    if profile not in PROFILES:
        raise ConfigError(f"must be one of {', '.join(PROFILES)}, got {profile!r}", key="profile")
    deepness = profile == "deepness"
    if deepness:
        if resolution_cm is None:
            raise ConfigError(
                "the deepness profile needs the ground resolution the model works at, in cm per pixel "
                "(checkpoints do not record it; e.g. Vaihingen 9, Potsdam 5, LoveDA 30)",
                key="resolution_cm",
            )
        if not (np.isfinite(resolution_cm) and resolution_cm > 0):
            raise ConfigError(
                f"must be a positive number of cm per pixel, got {resolution_cm}", key="resolution_cm"
            )
        if opset > DEEPNESS_MAX_OPSET:
            raise ConfigError(
                f"{opset}: the deepness profile needs at most {DEEPNESS_MAX_OPSET} (the onnxruntime "
                "the plugin installs reads no newer)",
                key="opset",
            )
    output = Path(output)
    loaded = load_checkpoint(checkpoint)
    tile = loaded.tiling.tile if tile is None else tile
    overlap = loaded.tiling.overlap if overlap is None else overlap
    if tile < STRIDE or tile % STRIDE:
        raise ConfigError(f"must be a positive multiple of {STRIDE} for export, got {tile}", key="tile")
    check_overlap(overlap)
    model = loaded.build_model().float().eval()
    exported = _Probabilities(model).eval() if deepness else model
    output_name = "probabilities" if deepness else "logits"
    example = torch.randn(2, model.config.in_channels, tile, tile)
    with OutputGroup({"onnx": output}) as files:
        temp = files.temp("onnx")
        files.side_file("onnx", ".data")  # the exporter's external weights, folded into the file below
        with warnings.catch_warnings():
            # the tracer's notes on Python control flow over shapes, and torch.export's advice on
            # dynamic_axes (only the batch axis is dynamic, which it converts as meant)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*dynamic_axes", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"from_dynamic_axes_to_dynamic_shapes is deprecated")
            torch.onnx.export(
                exported,
                (example,),
                str(temp),
                input_names=["image"],
                output_names=[output_name],
                dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
                opset_version=opset,
                dynamo=importlib.util.find_spec("onnxscript")
                is not None,  # torch.export traces shapes as numbers; needs onnxscript
                verbose=False,
            )
        graph = onnx.load(str(temp))  # with the external weights, if the exporter wrote them apart
        meta = {
            **metadata(model, loaded.tiling), "tile": tile, "checkpoint": str(checkpoint), "output": output_name
        }  # fmt: skip
        entries = {METADATA_KEY: json.dumps(meta)}
        if deepness:
            info = model_info(model, tiling=loaded.tiling)
            entries.update(deepness_metadata(info, tile, overlap, resolution_cm))
        for key, value in entries.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        if deepness and graph.ir_version > DEEPNESS_IR_VERSION:
            graph.ir_version = DEEPNESS_IR_VERSION  # the graph uses nothing newer: the checker says so
            onnx.checker.check_model(graph)
        onnx.save(graph, str(temp))  # one self-contained file
        difference = 0.0
        if check:
            with torch.inference_mode():
                expected = exported(example).numpy()
            got = OnnxModel(temp).run(example.numpy())
            difference = float(np.abs(got - expected).max())
            if not difference <= TOLERANCE:
                raise CheckpointError(
                    f"ONNX export of {checkpoint} differs from PyTorch by {difference:.3g} (> {TOLERANCE})"
                )
        files.commit()
    return difference


def read_metadata(raw: str, path: str | os.PathLike) -> tuple[ModelInfo, str]:
    """The :class:`ModelInfo` (its tiling: the graph's tile) and the
    output (one of :data:`OUTPUTS`) stored by :func:`export_onnx`.

    Malformed metadata (not JSON, missing keys, wrong types or values) raises a
    :class:`CheckpointError` naming the file and the key.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: invalid '{METADATA_KEY}' metadata: {what}")

    try:
        meta = json.loads(raw)
    except ValueError as error:
        raise bad(f"not JSON ({first_line(error)})") from error
    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    config = meta.get("model_config")
    if not isinstance(config, dict):
        raise bad("model_config: missing or not an object")
    numbers = {
        "tile": meta.get("tile"),
        **{f"model_config.{k}": config.get(k) for k in ("num_classes", "in_channels")},
    }
    for key, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad(f"{key}: expected a positive integer, got {value!r}")
    dataset = None
    if meta.get("dataset") is not None:
        try:
            dataset = DatasetSpec.from_dict(meta["dataset"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise bad(f"dataset: {first_line(error)}") from error
        if dataset.num_classes != config["num_classes"] or dataset.num_bands != config["in_channels"]:
            raise bad("dataset: its classes or bands do not match model_config")
    tiling = Tiling.from_metadata(meta)
    if meta.get("output") not in OUTPUTS:
        raise bad(f"output: expected one of {', '.join(OUTPUTS)}, got {meta.get('output')!r}")
    info = ModelInfo(
        config["num_classes"], config["in_channels"], dataset, str(path),
        tiling=Tiling(numbers["tile"], tiling.overlap, "checkpoint"),
    )  # fmt: skip
    return info, meta["output"]


class OnnxModel:
    """An exported bicorseg ONNX file: ``model(x)`` maps a normalised batch to logits like PyTorch's."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        _, ort = _require_onnx()
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()  # graph optimisation: onnxruntime's default (all), measured fastest
        # as many threads as torch uses: the predictor's workers split the cores through that setting
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise CheckpointError(f"cannot read ONNX model {path}: {first_line(error)}") from error
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path} was not exported by bicorseg (no '{METADATA_KEY}' metadata)")
        self.info, self.output = read_metadata(raw, path)
        self.tile = self.info.tiling.tile
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def check_output(self, out: np.ndarray) -> None:
        """Refuse a graph whose output is not what its metadata says: probabilities are in [0, 1] and
        sum to 1 over the classes at every pixel, and logits do not all look like that (what is not
        finite is left to the predictor, which writes it as nodata)."""
        finite = np.isfinite(out).all(axis=1)
        if not finite.any():
            return
        values = np.moveaxis(out, 1, -1)[finite]  # pixels x classes
        sums = values.sum(axis=1)
        low, high, off = float(values.min()), float(values.max()), float(np.abs(sums - 1.0).max())
        looks_like = (
            low >= -PROBABILITY_TOLERANCE
            and high <= 1 + PROBABILITY_TOLERANCE
            and off <= PROBABILITY_TOLERANCE
        )
        if self.output == "probabilities" and not looks_like:
            raise CheckpointError(
                f"{self.path}: its metadata says the graph gives probabilities, but its output is not "
                f"(values from {low:.4g} to {high:.4g}, class sums off 1 by up to {off:.4g}): export it again"
            )
        if self.output == "logits" and looks_like and values.shape[1] > 1:
            raise CheckpointError(
                f"{self.path}: its metadata says the graph gives logits, but its output is probabilities "
                "(in [0, 1], summing to 1 at every pixel): export it again"
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph's output (logits, or probabilities for the deepness profile) of a float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height > self.tile or width > self.tile:
            raise ConfigError(f"this ONNX model takes tiles up to {self.tile} px, got {height} x {width}")
        pad_h, pad_w = self.tile - height, self.tile - width
        if pad_h or pad_w:  # rasters smaller than the exported tile: pad as the PyTorch model does
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self.run(x.detach().cpu().float().numpy())
        self.check_output(out)
        logits = torch.from_numpy(out)
        if self.output == "probabilities":  # log p: the softmax the predictor takes gives p back
            logits = torch.log(logits.clamp_min(torch.finfo(torch.float32).tiny))
        return logits[..., :height, :width].to(x.device)
