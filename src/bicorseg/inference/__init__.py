"""Inference: tiling and blending, windowed raster prediction, units and executors, TTA, heatmaps, ONNX.

Public API:

* :func:`predict_array`: sliding-window class probabilities of an in-memory, normalised image.
* :class:`Predictor`, :class:`PredictOptions`, :func:`predict_files`: prediction over image and raster
  files of any size (GeoTIFF in, Cloud-Optimized GeoTIFF out; PNG/JPEG in, PNG out), in one process,
  worker processes, shards or on Ray (:mod:`.batch`), and :func:`mosaic` to assemble shards' parts.
* :func:`with_tta`, :func:`resolve_tta`, :data:`TTA_MODES`: test-time augmentation around any logits
  function (flips, quarter turns, scales; the publication's passes per dataset).
* :class:`TileGrid`, :func:`blend_weights`, :class:`SlidingWindow`: the tiling machinery.
* :func:`export_heatmaps`: per-layer class heatmaps and the interpretability figure.
* :func:`export_onnx` and :class:`OnnxModel` live in :mod:`bicorseg.inference.onnx` (optional extra).

Modules: :mod:`.raster_io` (reading inputs), :mod:`.writers` (outputs), :mod:`.engine` (blocks of
tiles), :mod:`.predictor` (one model, one file), :mod:`.units` (plan, parts, mosaic), :mod:`.batch`
(many files, processes, shards), :mod:`.ray_executor`, :mod:`.model_info`, :mod:`.tta`,
:mod:`.heatmaps`, :mod:`.onnx`.
"""

from bicorseg.data.io import find_inputs
from bicorseg.inference.batch import predict_files
from bicorseg.inference.engine import SlidingWindow
from bicorseg.inference.heatmaps import export_heatmaps
from bicorseg.inference.model_info import ModelInfo, model_info
from bicorseg.inference.predictor import FileResult, PredictOptions, Predictor, predict_array
from bicorseg.inference.tiling import TileGrid, blend_weights
from bicorseg.inference.tta import TTA_MODES, resolve_tta, tta_passes, with_tta
from bicorseg.inference.units import mosaic

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
    "mosaic",
    "predict_array",
    "predict_files",
    "resolve_tta",
    "tta_passes",
    "with_tta",
]
