"""Reading inputs: opening rasters and pictures, choosing bands and the mask, normalising, reading windows.

* :func:`inspect_input`: the bands fed to the model, a real alpha band, undeclared float nodata
  (one warning per file), checked once per input before any work (an :class:`InputPlan`).
* :func:`statistics` and :func:`check_normalisation`: the checkpoint's per-band mean and std (never a
  silent rescale).
* a rescale of inputs that are not in the checkpoint's units (:mod:`bicorseg.rescale`: 16-bit,
  12-bit in 16-bit containers, floats in 0..1), asked for by the ``rescale`` option; its statistics
  come from a bounded sample of windows (:func:`sample_values`), once per input when it is
  inspected, and travel in the :class:`InputPlan`.
* :class:`RasterReader`: normalised windows and their validity mask, the ``read`` callback of the
  sliding-window engine.

Nodata (``docs/prediction.md``, Input: bands, statistics, nodata): the raster's mask (GDAL's
dataset mask), bands not finite, or floating-point values more than :data:`PLAUSIBLE_STDS` standard
deviations from the checkpoint's mean. A band the model reads as data is never used as a mask, even
if GDAL labels it alpha. Nodata pixels are replaced by the band mean before the model sees them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from bicorseg import raster_access, typedconfig
from bicorseg.defaults import PICTURE_SUFFIXES
from bicorseg.errors import BicorsegWarning, CheckpointError, InputError
from bicorseg.inference.model_info import ModelInfo
from bicorseg.rescale import (
    Rescale,
    check_checkpoint_units,
    needs_sample,
    resolve_rescale,
    sample_windows,
)
from bicorseg.rescale import describe as describe_rescale
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, normalise

# floating-point values further than this many standard deviations from the checkpoint's mean are
# undeclared nodata (-3.4e38, -9999 on 8-bit statistics, ...), not data
PLAUSIBLE_STDS = 50.0
SCAN_BYTES = 64 * 2**20  # size of the strips read when an input is inspected
UNDECLARED_NODATA = 1e30  # values of this magnitude are nodata, not data (-3.4e38, -1e38, ...)
DEFAULT_BLOCK_SHAPE = (256, 256)  # outputs of an input that is not tiled in square blocks


@dataclass(frozen=True)
class Georeference:
    """Where an output lies, as plain data (it travels in a sharded run's plan): CRS, transform or
    ground control points, and the input's block shape (kept for the outputs when it suits a COG)."""

    crs: str | None = None
    transform: tuple[float, ...] | None = None
    gcps: tuple[tuple[Any, ...], ...] | None = None  # (row, col, x, y, z, id, info)
    block: tuple[int, int] = DEFAULT_BLOCK_SHAPE

    @classmethod
    def of(cls, src: rasterio.DatasetReader) -> Georeference:
        """The georeferencing of an open input (through its plain-data form, as a plan stores it)."""
        block = DEFAULT_BLOCK_SHAPE
        if src.profile.get("tiled") and src.block_shapes:
            by, bx = src.block_shapes[0]
            if by == bx and by % 16 == 0:
                block = (by, bx)
        crs = src.crs
        transform = gcps = None
        if not src.transform.is_identity:
            transform = tuple(src.transform)[:6]
        elif src.gcps[0]:  # georeferenced by ground control points
            points, crs = src.gcps
            gcps = tuple((g.row, g.col, g.x, g.y, g.z, g.id, g.info) for g in points)
        plain = typedconfig.to_plain(cls(crs.to_string() if crs else None, transform, gcps, block))
        return typedconfig.build(cls, plain, complete=True)

    def scaled(self, scale: int) -> Georeference:
        """The georeferencing of an output at ``1/scale`` of the resolution (heatmaps)."""
        transform = gcps = None
        if self.transform is not None:
            transform = tuple(rasterio.Affine(*self.transform) @ rasterio.Affine.scale(scale))[:6]
        if self.gcps is not None:
            gcps = tuple((g[0] / scale, g[1] / scale, *g[2:]) for g in self.gcps)
        return Georeference(self.crs, transform, gcps, self.block)


def is_picture(path: raster_access.InputPath) -> bool:
    """Whether ``path`` is a plain picture (PNG, JPEG, ...), predicted into a PNG rather than a GeoTIFF."""
    return path.suffix.lower() in PICTURE_SUFFIXES


@dataclass(frozen=True)
class InputPlan:
    """What inspecting an input decided (see :func:`inspect_input`).

    Attributes:
        path: the input, as :func:`bicorseg.raster_access.input_path` made it where it entered.
        bands: band indexes (from 1) fed to the model.
        alpha: the band after them is a real alpha band, used as the mask through GDAL's dataset mask.
        lower, upper: per-band plausible range of floating-point input (None for integer input).
        value_range: smallest and largest valid value of floating-point input.
        shape: the input's height and width.
        geo: the input's georeferencing (kept by every output).
        rescale: the map of the input's values onto the checkpoint's 8-bit units (None: as they are).
    """

    path: raster_access.InputPath
    bands: tuple[int, ...]
    alpha: bool = False
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    shape: tuple[int, int] = (0, 0)
    geo: Georeference | None = None
    rescale: Rescale | None = None


def _strips(src: rasterio.DatasetReader, bands: int) -> list[Window]:
    """Full-width row strips of at most about :data:`SCAN_BYTES`, aligned to the block height."""
    block = src.block_shapes[0][0] if src.block_shapes else 1
    per_row = max(1, src.width * bands * np.dtype(src.dtypes[0]).itemsize)
    rows = max(block, (SCAN_BYTES // per_row) // block * block)
    return [Window(0, y, src.width, min(rows, src.height - y)) for y in range(0, src.height, rows)]


def _is_real_alpha(src: rasterio.DatasetReader, band: int) -> bool:
    """A band GDAL calls alpha whose values are only 0 and 255 (read in strips, stops at the first other)."""
    if src.colorinterp[band - 1] != rasterio.enums.ColorInterp.alpha:
        return False
    for window in _strips(src, 1):
        values = src.read(band, window=window)
        if not ((values == 0) | (values == 255)).all():
            return False
    return True


def inspect_input(
    src: rasterio.DatasetReader, path: raster_access.InputPath, info: ModelInfo, rescale: str = "none"
) -> InputPlan:
    """Choose the bands and the mask of an input, and report what is doubtful (one warning each).

    Reads the whole raster once when it is floating point (to count undeclared nodata) or has a
    band beyond the model's (to tell a real alpha band from data). ``rescale`` is a mode of
    :mod:`bicorseg.rescale` (checked); the statistics it needs are read from a bounded sample of windows.
    Errors name the file.
    """
    extra = src.count - info.in_channels
    if extra not in (0, 1):
        raise InputError(
            f"{path} has {src.count} band(s) but the checkpoint {info.source} expects {info.in_channels}"
        )
    if np.dtype(src.dtypes[0]).kind not in "uif":
        raise InputError(f"{path} has pixel type {src.dtypes[0]}, which is not a real number type")
    bands = tuple(range(1, info.in_channels + 1))
    alpha = False
    with raster_access.reading(path):
        if extra:
            alpha = _is_real_alpha(src, src.count)
            if not alpha:
                interp = src.colorinterp[-1].name
                why = (
                    ", and it is no alpha mask (values other than 0 and 255): no pixel is masked by it"
                    if interp == "alpha"
                    else ""
                )
                warnings.warn(
                    f"{path}: band {src.count} ({interp}) is dropped: the checkpoint {info.source} expects "
                    f"{info.in_channels} band(s){why}",
                    BicorsegWarning,
                    stacklevel=2,
                )
        plan = InputPlan(path, bands, alpha, shape=(src.height, src.width), geo=Georeference.of(src))
        mean, std = statistics(info)
        check_checkpoint_units(rescale, mean, info.source)
        sample = sample_values(src, plan) if needs_sample(rescale, src.dtypes[0]) else None
        nbits = src.tags(1, "IMAGE_STRUCTURE").get("NBITS")
        plan = replace(
            plan,
            rescale=resolve_rescale(
                rescale, len(bands), src.dtypes[0], sample, int(nbits) if nbits and nbits.isdigit() else None
            ),
        )
        if np.dtype(src.dtypes[0]).kind == "f":
            plan = _scan_float(src, plan, mean, std)
    check_normalisation(info, src.dtypes[0], path, plan.value_range, rescale != "none")
    return plan


def rescale_tag(mode: str, plan: InputPlan) -> str | None:
    """What an input's outputs record of its rescale (``bicorseg_rescale``); None without the option."""
    return None if mode == "none" else describe_rescale(plan.rescale)


def sample_values(src: rasterio.DatasetReader, plan: InputPlan) -> np.ndarray:
    """``bands x n`` valid values of the windows of :func:`bicorseg.rescale.sample_windows`.

    Nodata is left out: what the raster's mask declares, values that are not finite, and values of
    magnitude :data:`UNDECLARED_NODATA` or more (the usual undeclared floating-point nodata).
    """
    reader = RasterReader(src, plan)
    kept = []
    for y0, x0, height, width in sample_windows(src.height, src.width):
        window = Window(x0, y0, width, height)
        data = src.read(reader.bands, window=window, out_dtype="float32")
        with np.errstate(invalid="ignore"):
            valid = reader.declared_mask(window, data) & (np.abs(data) < UNDECLARED_NODATA).all(axis=0)
        kept.append(data[:, valid])
    return np.concatenate(kept, axis=1)


def _scan_float(src, plan: InputPlan, mean, std) -> InputPlan:
    """Count the pixels whose values are undeclared nodata, and the range of the valid values.

    Plausible values lie within :data:`PLAUSIBLE_STDS` standard deviations of the checkpoint's mean
    once rescaled (in the input's own units when it is not rescaled).
    """
    lower = tuple(float(m - PLAUSIBLE_STDS * s) for m, s in zip(mean, std))
    upper = tuple(float(m + PLAUSIBLE_STDS * s) for m, s in zip(mean, std))
    if plan.rescale is not None:
        lower, upper = plan.rescale.input_values(lower), plan.rescale.input_values(upper)
    plan = replace(plan, lower=lower, upper=upper)
    reader = RasterReader(src, plan)
    masked, example = 0, None
    lo, hi = np.inf, -np.inf
    for window in _strips(src, len(plan.bands)):
        data = src.read(reader.bands, window=window, out_dtype="float32")
        declared = reader.declared_mask(window, data)
        ok = reader.plausible(data)
        bad = declared & ~ok
        count = int(np.count_nonzero(bad))
        if count:
            masked += count
            if example is None:
                values = data[:, bad][:, 0]
                wrong = ~np.isfinite(values) | (values < np.asarray(lower)) | (values > np.asarray(upper))
                example = float(values[np.argmax(wrong)])
        good = data[:, declared & ok]
        if good.size:
            lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
    if masked:
        warnings.warn(
            f"{plan.path}: {masked} pixel(s) with undeclared nodata (values not finite or more than "
            f"{PLAUSIBLE_STDS:g} std from the checkpoint's mean, e.g. {example:.4g}) are masked as nodata",
            BicorsegWarning,
            stacklevel=3,
        )
    return replace(plan, value_range=(lo, hi) if lo <= hi else None)


def statistics(info: ModelInfo) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's per-band mean and std (ImageNet's 8-bit statistics without dataset facts)."""
    if info.dataset is None:
        return IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT
    return info.dataset.mean, info.dataset.std


def check_normalisation(
    info: ModelInfo, dtype: str, path: Path, value_range: tuple[float, float] | None, rescaled: bool
) -> None:
    """Check that the checkpoint's per-band mean and std (raw input units) suit an input; never rescales.

    A checkpoint without dataset facts falls back to ImageNet 8-bit statistics (with a warning)
    if the model takes 3 bands, and is refused otherwise. Input whose type or values (``value_range``
    of floating-point input) do not fit the statistics' units is used as it is, with a warning that
    names the ``rescale`` option (:mod:`bicorseg.rescale`); ``rescaled`` input has none.
    """
    if info.dataset is None:
        if info.in_channels != 3:
            raise CheckpointError(
                f"{info.source} carries no normalisation (no dataset facts) for its "
                f"{info.in_channels}-band input: save it with a DatasetSpec"
            )
        warnings.warn(
            f"{info.source} carries no normalisation: using ImageNet statistics of 8-bit RGB",
            BicorsegWarning,
            stacklevel=2,
        )
    if rescaled:  # mapped onto the checkpoint's 8-bit units (bicorseg.rescale)
        return
    mean = statistics(info)[0]
    bits = np.dtype(dtype).itemsize * 8 if np.dtype(dtype).kind in "ui" else None
    in_unit_range = value_range is not None and 0.0 <= value_range[0] and value_range[1] <= 1.0
    if (bits is not None and bits > 8 and max(mean) <= 255) or (in_unit_range and 1.0 < max(mean) <= 255):
        what = f"{dtype} with values in 0..1" if in_unit_range else dtype
        warnings.warn(
            f"{path} is {what} but the checkpoint's normalisation is in 8-bit units "
            f"(mean {max(mean):.4g}): values are used as they are, not rescaled (the map may be of one "
            "class); the `rescale` option maps them to 0..255 (auto, percentile or MIN,MAX)",
            BicorsegWarning,
            stacklevel=2,
        )
    elif bits == 8 and max(mean) > 255:
        warnings.warn(
            f"{path} is 8-bit but the checkpoint's normalisation is not (mean up to {max(mean):.4g})",
            BicorsegWarning,
            stacklevel=2,
        )


class RasterReader:
    """Normalised windows of a rasterio dataset with their validity mask (see module docstring);
    ``info``: the model whose statistics normalise them (None: a reader of masks only)."""

    def __init__(self, src: rasterio.DatasetReader, plan: InputPlan, info: ModelInfo | None = None) -> None:
        self.src, self.plan = src, plan
        self.mean, self.std = statistics(info) if info is not None else ((), ())
        self.bands = list(plan.bands)
        self.dataset_mask = raster_access.reads_dataset_mask(src, plan.alpha)
        if plan.lower is not None:
            self.lower = np.asarray(plan.lower, np.float32)[:, None, None]
            self.upper = np.asarray(plan.upper, np.float32)[:, None, None]

    def declared_mask(self, window: Window, data: np.ndarray) -> np.ndarray:
        """Valid pixels by the raster's own mask (nodata value, real alpha band, internal mask)."""
        return raster_access.declared_valid(self.src, window, data, self.dataset_mask)

    def plausible(self, data: np.ndarray) -> np.ndarray:
        """Pixels whose every band is finite (and, for floating-point input, near the statistics)."""
        if self.plan.lower is None:
            return np.isfinite(data).all(axis=0)
        with np.errstate(invalid="ignore"):
            return ((data >= self.lower) & (data <= self.upper)).all(axis=0)  # NaN compares False

    def overview(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The bands in input units and their validity at ``shape`` (nearest samples), for display."""
        data = self.src.read(
            self.bands,
            out_shape=(len(self.bands), *shape),
            resampling=Resampling.nearest,
            out_dtype="float32",
        )
        if self.dataset_mask:
            valid = self.src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        else:
            valid = self.declared_mask(Window(0, 0, *shape[::-1]), data)
        return data, valid & self.plausible(data)

    def __call__(self, y0: int, x0: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        window = Window(x0, y0, width, height)
        with raster_access.reading(self.plan.path):
            data = self.src.read(self.bands, window=window, out_dtype="float32")
            valid = self.declared_mask(window, data)
        raster_access.check_no_network(self.plan.path)  # a tile GDAL left out for want of the network
        valid &= self.plausible(data)
        if self.plan.rescale is not None:
            with np.errstate(invalid="ignore"):  # NaN stays NaN; masked just below
                self.plan.rescale.apply(data)
        data = normalise(data, self.mean, self.std)
        data[:, ~valid] = 0.0  # the band mean: masked pixels never feed garbage to the model
        return data, valid
