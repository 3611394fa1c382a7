"""The truth and error views of a scene whose labels are given: where the prediction is right or wrong.

The labels are a raster of the prediction's size, on its grid when both are georeferenced (the same
CRS, corners within a tenth of a pixel): class indices (one band; 255 and the raster's nodata are
unlabelled), colours (three or four bands, decoded by the class colours), or the raw values or
colours of a class table (``class_table``). A value or colour that is not a class is an error
naming the file. The pictures are read decimated like the prediction's; the confusion matrix
counts every pixel, window by window (bounded memory), where the pixel is labelled and predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling

from bicorseg import raster_access
from bicorseg.data.folder import ClassTable
from bicorseg.data.labels import LabelTable, colour_table
from bicorseg.defaults import NODATA
from bicorseg.errors import InputError
from bicorseg.gis.source import ClassColours, ClassRaster
from bicorseg.metrics import Scores, scores_from_confusion
from bicorseg.report.place import crs_label

CORRECT = (0, 158, 115)  # Okabe-Ito bluish green: told apart from WRONG with any colour vision
WRONG = (213, 94, 0)  # Okabe-Ito vermilion


@dataclass
class TruthView:
    """What a scene's labels show (see the module docstring)."""

    labels: Path
    truth: np.ndarray  # H x W x 4 uint8: the labels in the class colours, transparent where unlabelled
    errors: np.ndarray  # H x W x 4 uint8: CORRECT / WRONG, transparent where not compared
    confusion: np.ndarray  # N x N pixel counts over every pixel: rows labels, columns prediction
    scores: Scores  # from the confusion, every class averaged where defined


def _check_grid(src: rasterio.DatasetReader, raster: ClassRaster, labels: Path) -> None:
    """Labels that are georeferenced lie on the prediction's grid (same CRS, pixels within a tenth of
    a pixel); labels without a CRS (a PNG) are taken pixel for pixel."""
    pred = raster.src
    if src.crs is None or pred.crs is None or src.transform.is_identity or pred.transform.is_identity:
        return
    if src.crs != pred.crs:
        raise InputError(
            f"labels {labels} are in {crs_label(src.crs)} but the prediction {raster.path} in {crs_label(pred.crs)}"
        )
    pixel = math.hypot(pred.transform.a, pred.transform.d)  # a pixel's width in CRS units
    corners = [(0, 0), (pred.width, 0), (0, pred.height), (pred.width, pred.height)]
    apart = max(math.dist(src.transform @ c, pred.transform @ c) for c in corners)
    if apart > pixel / 10:
        raise InputError(
            f"labels {labels} lie on another grid than the prediction {raster.path}: their corners are "
            f"{apart / pixel:.1f} pixels away"
        )


def _decode(table: LabelTable, raw: np.ndarray, labelled: np.ndarray, path: Path) -> np.ndarray:
    """``H x W`` class indices of a window's raw labels (``bands x H x W``); the ignore index where
    the raster's mask says unlabelled."""
    out = np.full(labelled.shape, table.ignore_index, np.uint8)
    if labelled.any():
        values = raw[:3, labelled][:, None, :] if table.kind == "colour" else raw[0, labelled][None, :]
        out[labelled] = table.encode(values, path)[0][0]
    return out


def read_truth(
    raster: ClassRaster,
    labels: Path,
    colours: list[tuple[int, int, int]],
    predicted: np.ndarray,
    valid: np.ndarray,
    class_table: ClassColours | None = None,
) -> TruthView:
    """The truth and error pictures at the size of ``predicted`` (the prediction's picture: decimated
    class values, and ``valid``, whether each has one) and the confusion over every pixel of ``raster``."""
    n, shape = len(colours), predicted.shape
    with raster_access.open_raster(raster_access.input_path(labels)) as src:
        if (src.height, src.width) != (raster.src.height, raster.src.width):
            raise InputError(
                f"labels {labels} are {src.width} x {src.height} px but the prediction {raster.path} is "
                f"{raster.src.width} x {raster.src.height}"
            )
        _check_grid(src, raster, labels)
        # the class table's codes, else class indices (one band) or the class colours
        if isinstance(class_table, ClassTable):
            table = class_table.labels
        elif src.count >= 3:
            table = LabelTable.from_colours(colours, ignore_index=NODATA)
        else:
            table = LabelTable.identity(len(colours), NODATA)
        if table.num_classes != n:
            raise InputError(
                f"labels {labels}: the class table has {table.num_classes} classes, the prediction {n}"
            )
        indexes = [1, 2, 3] if table.kind == "colour" else [1]
        if src.count < len(indexes):
            raise InputError(f"labels {labels} have {src.count} band(s): colours need three")
        with raster_access.reading(labels):
            raw = src.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
            labelled = src.read_masks(1, out_shape=shape, resampling=Resampling.nearest) > 0
            truth = _decode(table, raw, labelled, labels)
            confusion = np.zeros((n, n), np.int64)
            for window in raster.windows():
                pred, pred_valid = raster.read(window)
                got = src.read(indexes, window=window)
                window_truth = _decode(table, got, src.read_masks(1, window=window) > 0, labels)
                keep = pred_valid & (window_truth < n) & (pred >= 0) & (pred < n)
                pairs = window_truth[keep].astype(np.int64) * n + pred[keep].astype(np.int64)
                confusion += np.bincount(pairs, minlength=n * n).reshape(n, n)
    shown = truth < n
    truth_rgba = colour_table(colours[:256], alpha=True)[truth]  # transparent where unlabelled
    compared = shown & valid & (predicted < n)
    right = compared & (predicted == truth)
    errors = np.zeros((*shape, 4), np.uint8)
    errors[right] = (*CORRECT, 255)
    errors[compared & ~right] = (*WRONG, 255)
    scores = scores_from_confusion(torch.from_numpy(confusion))
    return TruthView(Path(labels), np.ascontiguousarray(truth_rgba), errors, confusion, scores)
