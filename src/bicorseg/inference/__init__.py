"""Inference: tiling and blending, windowed raster prediction, test-time augmentation, heatmaps, ONNX.

Public API:

* :func:`predict_array`: sliding-window class probabilities of an in-memory, normalised image.
* :class:`Predictor`, :class:`PredictOptions`, :func:`predict_files`: prediction over image and raster
  files of any size (GeoTIFF in, GeoTIFF out; PNG/JPEG in, PNG out).
* :func:`with_tta`, :func:`resolve_tta`, :data:`TTA_MODES`: test-time augmentation around any logits
  function (flips, quarter turns, scales; the publication's passes per dataset).
* :class:`TileGrid`, :func:`blend_weights`, :class:`SlidingWindow`: the tiling machinery.
* :func:`export_heatmaps`: per-layer class heatmaps and the interpretability figure.
* :func:`export_onnx` and :class:`OnnxModel` live in :mod:`bicorseg.inference.onnx` (optional extra).
"""

from bicorseg.inference.engine import SlidingWindow
from bicorseg.inference.heatmaps import export_heatmaps
from bicorseg.inference.predictor import (
    FileResult,
    ModelInfo,
    PredictOptions,
    Predictor,
    find_inputs,
    model_info,
    predict_array,
    predict_files,
)
from bicorseg.inference.tiling import TileGrid, blend_weights
from bicorseg.inference.tta import TTA_MODES, resolve_tta, tta_passes, with_tta

__all__ = [
    "TTA_MODES",
    "FileResult",
    "ModelInfo",
    "PredictOptions",
    "Predictor",
    "SlidingWindow",
    "TileGrid",
    "blend_weights",
    "export_heatmaps",
    "find_inputs",
    "model_info",
    "predict_array",
    "predict_files",
    "resolve_tta",
    "tta_passes",
    "with_tta",
]
