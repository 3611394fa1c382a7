"""Prediction over images and georeferenced rasters of any size: windowed reads, blended tiles, safe writes.

* :func:`predict_array`: sliding-window probabilities for an image already in memory (used by the
  whole-tile evaluation).
* :class:`Predictor`: one model (PyTorch or ONNX) applied to files. A raster is read in windows,
  normalised with the checkpoint's statistics, run through :class:`~.engine.SlidingWindow` and
  written strip by strip, so memory does not depend on the raster's size.
* :func:`predict_files`: many files, optionally split across worker processes.

Outputs for an input ``<stem>.<ext>`` in the output folder:

* GeoTIFF input (anything GDAL reads that is not a plain picture): ``<stem>.tif``, uint8 class
  indices, nodata 255, the input's CRS, transform and block size, deflate-compressed, with the
  class colours as its colour table and the class names in its tags;
  PNG / JPEG input: ``<stem>.png``, 8-bit grey class indices, 255 where the input was masked.
* ``--probabilities``: ``<stem>_prob.tif``, one band per class: ``uint8`` stores ``round(p * 254)``
  (GDAL scale 1/254 is set, so GIS tools read p) with nodata 255; ``float32`` stores p with
  nodata NaN.
* ``--color``: ``<stem>_color.tif`` (RGBA GeoTIFF) or ``<stem>_color.png`` (RGBA), nodata transparent.

Every output keeps the input's georeferencing: CRS and transform, or its ground control points.

Nodata: a pixel is nodata where the raster's mask says so (nodata value, alpha band or internal
mask: GDAL's dataset mask), where any band is NaN or infinite, or, for floating-point input, where
any band lies more than 50 standard deviations from the checkpoint's mean (undeclared nodata such
as -3.4e38; counted and reported in one warning per file). One band beyond the model's bands is
dropped with a warning; it is used as the mask only when it is a real alpha band (GDAL colour
interpretation alpha and only the values 0 and 255). A band the model reads as data is never used
as a mask, even if GDAL labels it alpha. Nodata pixels are replaced by the band mean before the
model sees them, tiles without a valid pixel are skipped, and the output is nodata there.

Every output is written to a hidden temporary file beside the target and renamed when complete.
Its tags record the checkpoint's sha256 and the settings that define the result (tile, overlap,
TTA, engine, probability type); a rerun skips an input whose outputs all exist, read back whole in
size, bands and type, and were made by the same checkpoint with the same settings. An existing
output that does not verify is replaced only with ``overwrite``; without it the run is refused
before any work, naming the file and why. No output may be an input, and no two inputs may share
an output: both are refused before any work.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from torch import nn

from bicorseg import raster_access
from bicorseg.atomic import OutputGroup
from bicorseg.data.io import sha256_file
from bicorseg.errors import CheckpointError, ConfigError, InputError, OutputError, first_line
from bicorseg.inference.engine import DEFAULT_CHUNK, SlidingWindow
from bicorseg.inference.tta import (
    TTASpec,
    check_tta_mode,
    describe_tta,
    parse_scales,
    resolve_tta,
    tta_name,
    with_tta,
)
from bicorseg.precision import check_precision
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, DatasetSpec

NODATA = 255
PROB_SCALE = 254  # uint8 probabilities: round(p * 254); 255 is left for nodata
PLAIN_DRIVERS = {"PNG", "JPEG", "BMP", "GIF", "WEBP"}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt", ".bmp", ".webp")
# GDAL's block cache in bytes (rasterio passes the number as bytes): GDAL's default, 5 % of the RAM,
# would fill up with blocks of a large raster and make the memory grow with its size
GDAL_CACHE_BYTES = 32 * 2**20
PROBABILITY_TYPES = ("uint8", "float32")
# floating-point values further than this many standard deviations from the checkpoint's mean are
# undeclared nodata (-3.4e38, -9999 on 8-bit statistics, ...), not data
PLAUSIBLE_STDS = 50.0
SCAN_BYTES = 64 * 2**20  # size of the strips read when an input is inspected


class Progress(Protocol):
    """What the predictor reports to a progress display."""

    def start(self, name: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a model besides its function."""

    num_classes: int
    in_channels: int
    dataset: DatasetSpec | None
    source: str  # the checkpoint, for messages
    sha256: str | None = None  # content hash of the checkpoint file, recorded in the outputs

    @property
    def palette(self) -> np.ndarray:
        """RGB colour per class (the dataset's, or matplotlib's ``tab20`` for a bare model)."""
        if self.dataset is not None:
            return np.asarray(self.dataset.palette, np.uint8)
        from matplotlib import colormaps

        colours = colormaps["tab20"](np.arange(self.num_classes) % 20)[:, :3]
        return np.round(colours * 255).astype(np.uint8)

    @property
    def class_names(self) -> list[str]:
        if self.dataset is not None:
            return list(self.dataset.class_names)
        return [f"class_{i}" for i in range(self.num_classes)]


def model_info(model: nn.Module, source: str = "the model") -> ModelInfo:
    """The :class:`ModelInfo` of a :class:`~bicorseg.models.BiCoRSeg`."""
    return ModelInfo(model.config.num_classes, model.config.in_channels, model.dataset, source)


@dataclass
class PredictOptions:
    """Options of ``bicorseg predict`` (see the module docstring for the outputs)."""

    tile: int = 512
    overlap: float = 0.25
    batch_size: int = 4
    tta: str = "none"  # a mode of bicorseg.inference.tta.TTA_MODES
    tta_scales: tuple[float, ...] | None = None  # extra input scales (not with "paper")
    tta_merge: str | None = None  # "logits" or "probs" (default: the mode's)
    probabilities: str | None = None  # None, "uint8" or "float32"
    color: bool = False
    overwrite: bool = False
    chunk: int = DEFAULT_CHUNK
    device: str = "cpu"
    precision: str = "fp32"  # or auto, bf16, fp16 (bicorseg.precision); the ONNX engine runs fp32

    def __post_init__(self) -> None:
        check_tta_mode(self.tta)
        self.tta_scales = parse_scales(self.tta_scales)
        if self.probabilities not in (None, *PROBABILITY_TYPES):
            raise ConfigError(f"must be uint8 or float32, got {self.probabilities!r}", key="probabilities")
        if self.tile < 32:
            raise ConfigError(f"must be at least 32 pixels, got {self.tile}", key="tile")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.overlap}", key="overlap")
        if self.batch_size < 1:
            raise ConfigError(f"must be at least 1, got {self.batch_size}", key="batch_size")
        check_precision(self.precision)


@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0


# --- in-memory prediction ---------------------------------------------------------------------------


def predict_array(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    tile: int = 512,
    overlap: float = 0.25,
    batch_size: int = 4,
    tta: str | TTASpec = "none",
    *,
    valid: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities ``N x H x W`` (float32) of an image ``bands x H x W`` by sliding windows.

    ``image`` must already be normalised as the model expects (``(x - mean) / std``, as the
    dataset samples are). ``model`` is any function from a batch ``B x bands x h x w`` to logits
    ``B x N x h x w`` (a :class:`~bicorseg.models.BiCoRSeg` is put in evaluation mode for the call).
    Tiles overlap by ``overlap`` and are blended with smooth weights; ``tta`` is a mode other than
    ``paper`` or a resolved :class:`~bicorseg.spec.TTASpec` (see :mod:`bicorseg.inference.tta`).
    Pixels where ``valid`` (``H x W`` bool) is False are zeroed before the model sees them and get
    probability 0 for every class.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3:
        raise InputError(f"predict_array expects an image bands x H x W, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bands, height, width = array.shape
    mask = np.ones((height, width), bool) if valid is None else np.asarray(valid, bool)
    if mask.shape != (height, width):
        raise InputError(f"valid mask {mask.shape} does not match the image {height} x {width}")
    mask = mask & np.isfinite(array).all(axis=0)
    array = np.where(mask, array, 0.0).astype(np.float32, copy=False)
    if device is None:
        params = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        device = params.device if params is not None else "cpu"
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        probs_fn = with_tta(model, tta)
        num_classes = _num_classes(model, probs_fn, bands, device)
        out = np.zeros((num_classes, height, width), np.float32)

        def write(y0: int, x0: int, values: np.ndarray, ok: np.ndarray) -> None:
            h, w = ok.shape
            out[:, y0 : y0 + h, x0 : x0 + w] = np.where(ok, values, 0.0)

        engine = SlidingWindow(
            height, width, num_classes, tile, overlap, batch_size, chunk=max(width, tile), device=device
        )
        engine.run(
            probs_fn, lambda y, x, h, w: (array[:, y : y + h, x : x + w], mask[y : y + h, x : x + w]), write
        )
    finally:
        if was_training:
            model.train()
    return out


def _num_classes(model: Any, probs_fn: Callable, bands: int, device: Any) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_classes"):
        return int(config.num_classes)
    with torch.inference_mode():  # a bare function: ask it once on a small blank input
        return int(probs_fn(torch.zeros(1, bands, 32, 32, device=device)).shape[1])


# --- reading rasters -------------------------------------------------------------------------------


def open_raster(path: Path | raster_access.VsiPath) -> AbstractContextManager[rasterio.DatasetReader]:
    """Open an image or raster with GDAL (no network unless asked; see :mod:`bicorseg.raster_access`).

    ``path`` is a local file or a :class:`~bicorseg.raster_access.VsiPath` (a URL or ``/vsi...``
    path the user named).
    """
    if not isinstance(path, raster_access.VsiPath) and not path.is_file():
        raise InputError(f"input not found: {path}")
    return raster_access.open_raster(path)


@dataclass(frozen=True)
class InputPlan:
    """What inspecting an input decided (see :func:`inspect_input`).

    Attributes:
        bands: band indexes (from 1) fed to the model.
        alpha: the band after them is a real alpha band, used as the mask through GDAL's dataset mask.
        lower, upper: per-band plausible range of floating-point input (None for integer input).
        masked: pixels masked for values outside that range or not finite (undeclared nodata).
        value_range: smallest and largest valid value of floating-point input.
        shape: the input's height and width.
    """

    bands: tuple[int, ...]
    alpha: bool = False
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    masked: int = 0
    value_range: tuple[float, float] | None = None
    shape: tuple[int, int] = (0, 0)


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


def inspect_input(src: rasterio.DatasetReader, path: Path, info: ModelInfo) -> InputPlan:
    """Choose the bands and the mask of an input, and report what is doubtful (one warning each).

    Reads the whole raster once when it is floating point (to count undeclared nodata) or has a
    band beyond the model's (to tell a real alpha band from data). Errors name the file.
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
    try:
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
                    stacklevel=2,
                )
        plan = InputPlan(bands, alpha, shape=(src.height, src.width))
        mean, std = _statistics(info)
        if np.dtype(src.dtypes[0]).kind == "f":
            plan = _scan_float(src, path, plan, mean, std)
    except RasterioError as error:
        raise InputError(f"cannot read {path}: {first_line(error)}") from error
    normalisation(info, src.dtypes[0], path, plan.value_range)
    return plan


def _scan_float(src, path: Path, plan: InputPlan, mean, std) -> InputPlan:
    """Count the pixels whose values are undeclared nodata, and the range of the valid values."""
    lower = tuple(float(m - PLAUSIBLE_STDS * s) for m, s in zip(mean, std))
    upper = tuple(float(m + PLAUSIBLE_STDS * s) for m, s in zip(mean, std))
    plan = replace(plan, lower=lower, upper=upper)
    reader = RasterReader(src, path, plan, np.zeros(1, np.float32), np.ones(1, np.float32))
    masked, example = 0, None
    lo, hi = np.inf, -np.inf
    for window in _strips(src, len(plan.bands)):
        data = src.read(list(plan.bands), window=window, out_dtype="float32")
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
            f"{path}: {masked} pixel(s) with undeclared nodata (values not finite or more than "
            f"{PLAUSIBLE_STDS:g} std from the checkpoint's mean, e.g. {example:.4g}) are masked as nodata",
            stacklevel=3,
        )
    return replace(plan, masked=masked, value_range=(lo, hi) if lo <= hi else None)


def _statistics(info: ModelInfo) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if info.dataset is None:
        return IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT
    return info.dataset.mean, info.dataset.std


def normalisation(
    info: ModelInfo, dtype: str, path: Path, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (raw input units) from the checkpoint; never rescales silently.

    A checkpoint without dataset facts falls back to ImageNet 8-bit statistics (with a warning)
    if the model takes 3 bands, and is refused otherwise. Input whose type or values (``value_range``
    of floating-point input) do not fit the statistics' units is used as it is, with a warning.
    """
    if info.dataset is None:
        if info.in_channels != 3:
            raise CheckpointError(
                f"{info.source} carries no normalisation (no dataset facts) for its "
                f"{info.in_channels}-band input: save it with a DatasetSpec"
            )
        warnings.warn(
            f"{info.source} carries no normalisation: using ImageNet statistics of 8-bit RGB", stacklevel=2
        )
    mean = _statistics(info)[0]
    bits = np.dtype(dtype).itemsize * 8 if np.dtype(dtype).kind in "ui" else None
    in_unit_range = value_range is not None and 0.0 <= value_range[0] and value_range[1] <= 1.0
    if (bits is not None and bits > 8 and max(mean) <= 255) or (in_unit_range and 1.0 < max(mean) <= 255):
        what = f"{dtype} with values in 0..1" if in_unit_range else dtype
        warnings.warn(
            f"{path} is {what} but the checkpoint's normalisation is in 8-bit units "
            f"(mean {max(mean):.4g}): values are used as they are, not rescaled",
            stacklevel=2,
        )
    elif bits == 8 and max(mean) > 255:
        warnings.warn(
            f"{path} is 8-bit but the checkpoint's normalisation is not (mean up to {max(mean):.4g})",
            stacklevel=2,
        )
    return statistics(info)


def statistics(info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's per-band mean and std as ``bands x 1 x 1`` arrays (ImageNet without facts)."""
    mean, std = _statistics(info)
    return np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]


class RasterReader:
    """Normalised windows of a rasterio dataset with their validity mask (see module docstring)."""

    def __init__(self, src: rasterio.DatasetReader, path: Path, plan: InputPlan, mean, std) -> None:
        self.src, self.path, self.plan, self.mean, self.std = src, path, plan, mean, std
        self.bands = list(plan.bands)
        # GDAL's dataset mask comes from an alpha band when there is one (GDAL marks the 4th band of
        # a 4-band byte GeoTIFF as alpha by default): only a real alpha band may mask pixels; with
        # any other, the nodata value of the bands read is the mask
        alpha_mask = any(
            rasterio.enums.MaskFlags.alpha in src.mask_flag_enums[b - 1] for b in range(1, src.count + 1)
        )
        self.dataset_mask = plan.alpha or not alpha_mask
        if plan.lower is not None:
            self.lower = np.asarray(plan.lower, np.float32)[:, None, None]
            self.upper = np.asarray(plan.upper, np.float32)[:, None, None]

    def declared_mask(self, window: Window, data: np.ndarray) -> np.ndarray:
        """Valid pixels by the raster's own mask (nodata value, real alpha band, internal mask)."""
        if self.dataset_mask:
            return self.src.dataset_mask(window=window) > 0
        nodata = self.src.nodata
        if nodata is None or np.isnan(nodata):
            return np.ones(data.shape[1:], bool)
        return (data != nodata).any(axis=0)  # GDAL's rule: nodata where every band is nodata

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
        try:
            data = self.src.read(self.bands, window=window, out_dtype="float32")
            valid = self.declared_mask(window, data)
        except RasterioError as error:
            raise InputError(f"cannot read {self.path}: {first_line(error)}") from error
        valid &= self.plausible(data)
        data -= self.mean
        data /= self.std
        data[:, ~valid] = 0.0  # the band mean: masked pixels never feed garbage to the model
        return data, valid


# --- writing outputs -------------------------------------------------------------------------------


def geotiff_profile(src: rasterio.DatasetReader | None, height: int, width: int, **extra: Any) -> dict:
    """A tiled, compressed GeoTIFF profile keeping the input's CRS, transform and block size."""
    block = (256, 256)
    if src is not None and src.profile.get("tiled") and src.block_shapes:
        by, bx = src.block_shapes[0]
        if by % 16 == 0 and bx % 16 == 0:
            block = (by, bx)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "tiled": True,
        "blockysize": block[0],
        "blockxsize": block[1],
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if src is not None and src.crs is not None:
        profile["crs"] = src.crs
    if src is not None and not src.transform.is_identity:
        profile["transform"] = src.transform
    elif src is not None and src.gcps[0]:  # georeferenced by ground control points
        profile["gcps"], profile["crs"] = src.gcps
    profile.update(extra)
    profile.setdefault("predictor", 3 if np.dtype(profile["dtype"]).kind == "f" else 2)
    return profile


class OutputSet:
    """The output files of one input, written in windows to temporary files and renamed on commit.

    The temporary files and the commit are :class:`bicorseg.atomic.OutputGroup`'s (which first
    removes stale temporary files of these targets); the class map is renamed last, so its presence
    marks a finished input.
    """

    def __init__(self, targets: dict[str, Path], stack: ExitStack) -> None:
        self.targets, self.stack = targets, stack
        self.group = OutputGroup(targets, last="class" if "class" in targets else None)
        self.datasets: dict[str, Any] = {}

    def open_geotiff(self, kind: str, profile: dict) -> Any:
        dst = rasterio.open(self.group.temp(kind), "w", **profile)
        self.datasets[kind] = dst
        return dst

    def temp_for(self, kind: str) -> Path:
        return self.group.temp(kind)

    def commit(self) -> None:
        """Close, check that every GeoTIFF reads back whole, then rename into place.

        GDAL reports a failed block write (a full disk) only as a logged error when the file is
        flushed, so a file is read back block by block before it may take its final name.
        """

        def verify(kind: str, temp: Path) -> None:
            dst = self.datasets.get(kind)
            if dst is None:
                return
            try:
                dst.close()
                _read_back(temp)
            except (OSError, RasterioError) as error:
                raise _write_error(self.targets[kind], error) from error

        self.group.commit(verify)

    def abort(self) -> None:
        for dst in self.datasets.values():
            try:
                dst.close()
            except Exception:  # closing a half-written file may fail; it is deleted anyway
                pass
        self.group.abort()


def _read_back(path: Path) -> None:
    with rasterio.open(path) as written:
        for _, window in written.block_windows(1):
            written.read(window=window)


def _write_error(target: Path, error: BaseException) -> OutputError:
    usage = shutil.disk_usage(target.parent)
    reason = getattr(error, "strerror", None) or first_line(error)
    if usage.free < 1 << 20:
        reason = f"the disk is full ({usage.free // 1024} KiB free)"
    return OutputError(f"cannot write {target}: {reason}; nothing was kept")


def _rgba(palette: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """RGBA (4 x h x w) of a class map; nodata is transparent."""
    table = np.zeros((256, 4), np.uint8)
    table[: len(palette), :3] = palette
    table[: len(palette), 3] = 255
    return np.moveaxis(table[classes], -1, 0)


# --- the predictor ---------------------------------------------------------------------------------


def _weights_sha256(module: nn.Module) -> str:
    """A content hash of a model's weights (for a model given in memory rather than as a file)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "weights:" + digest.hexdigest()


def _png_info(tags: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in tags.items():
        info.add_itxt(key, value)
    return info


class Predictor:
    """A model applied to image and raster files (see the module docstring for formats).

    Args:
        logits_fn: a normalised batch ``B x bands x h x w`` -> logits ``B x N x h x w``.
        info: classes, bands and normalisation of the model (``info.sha256`` identifies it in the
            outputs; a module given without it is identified by a hash of its weights).
        options: tiles, TTA and outputs.
        engine: ``"torch"`` or ``"onnx"``, recorded in the outputs' settings.
    """

    def __init__(
        self,
        logits_fn: Callable[[torch.Tensor], torch.Tensor],
        info: ModelInfo,
        options: PredictOptions,
        engine: str = "torch",
    ):
        if info.num_classes > NODATA:
            raise CheckpointError(
                f"{info.source} has {info.num_classes} classes; at most 255 fit a uint8 map"
            )
        if info.sha256 is None and isinstance(logits_fn, nn.Module):
            info = replace(info, sha256=_weights_sha256(logits_fn))
        self.logits_fn, self.info, self.options, self.engine = logits_fn, info, options, engine
        self.tta = resolve_tta(options.tta, info.dataset, options.tta_scales, options.tta_merge)
        self.probs_fn = with_tta(logits_fn, self.tta)
        self._plans: dict[tuple[str, int, int], InputPlan] = {}

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        options: PredictOptions,
        engine: str = "torch",
        sha256: str | None = None,
    ) -> Predictor:
        """A predictor from a bicorseg checkpoint (``engine="torch"``) or an exported ONNX file.

        ``options.precision`` is resolved for the device; the ONNX engine runs fp32 only.

        ``sha256`` is the file's content hash when the caller already has it (computed otherwise).
        """
        checkpoint = Path(checkpoint)
        if engine == "onnx":
            from bicorseg.inference.onnx import OnnxModel

            if options.precision not in ("auto", "fp32"):
                raise ConfigError(
                    f"the ONNX engine runs in fp32 only, got {options.precision} (use fp32 or auto)",
                    key="precision",
                )
            model = OnnxModel(checkpoint, device=options.device)
            info = replace(model.info, sha256=sha256 or sha256_file(checkpoint))
            # the graph's fixed tile
            predictor = cls(model, info, replace(options, tile=model.tile, precision="fp32"), engine)
            if predictor.tta.scales != (1.0,):
                raise ConfigError(
                    f"{checkpoint}: an ONNX graph has a fixed tile size, so it cannot run scaled test-time "
                    "augmentation passes: use the PyTorch checkpoint (engine torch)"
                )
            return predictor
        if engine != "torch":
            raise ConfigError(f"must be torch or onnx, got {engine!r}", key="engine")
        from bicorseg.checkpoint import load_model

        model = load_model(checkpoint, map_location=options.device, precision=options.precision)
        info = replace(model_info(model, str(checkpoint)), sha256=sha256 or sha256_file(checkpoint))
        return cls(model, info, replace(options, precision=model.precision), engine)

    def targets(self, path: Path, out_dir: Path) -> dict[str, Path]:
        """The output paths of one input (depends on whether it is a plain picture)."""
        plain = path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
        ext = ".png" if plain else ".tif"
        out = {"class": out_dir / f"{path.stem}{ext}"}
        if self.options.probabilities:
            out["probabilities"] = out_dir / f"{path.stem}_prob.tif"
        if self.options.color:
            out["color"] = out_dir / f"{path.stem}_color{ext}"
        return out

    def inspect(self, path: Path) -> InputPlan:
        """:func:`inspect_input` of ``path`` (warnings are issued then), remembered for this file."""
        path = raster_access.input_path(path)
        try:
            stat = path.stat()
            key: tuple[str, int, int] | None = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        except OSError:  # open_raster names the problem; a URL is inspected once per run
            key = (os.fspath(path), 0, 0) if isinstance(path, raster_access.VsiPath) else None
        if key is not None and key in self._plans:
            return self._plans[key]
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_raster(path) as src:
                plan = inspect_input(src, path, self.info)
        if key is not None:
            self._plans[key] = plan
        return plan

    def settings(self, kind: str) -> str:
        """The settings that define an output of ``kind``, as its ``bicorseg_settings`` tag records them."""
        opts = self.options
        tta = tta_name(opts.tta, self.info.dataset)
        if opts.tta_scales is not None:
            tta += f" tta_scales={','.join(f'{v:g}' for v in opts.tta_scales)}"
        if opts.tta_merge is not None:
            tta += f" tta_merge={opts.tta_merge}"
        text = f"tile={opts.tile} overlap={opts.overlap} tta={tta} engine={self.engine} precision={opts.precision}"
        return text + (f" probabilities={opts.probabilities}" if kind == "probabilities" else "")

    def verify(self, kind: str, target: Path, path: Path, shape: tuple[int, int]) -> str | None:
        """Why an existing output ``target`` of input ``path`` is not this run's result (None: it is)."""
        try:
            if target.suffix.lower() == ".png":
                with Image.open(target) as image:
                    image.load()
                    tags, size, layout = dict(getattr(image, "text", {})), image.size, f"mode {image.mode}"
                expected = "mode L" if kind == "class" else "mode RGBA"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(target) as out:
                        tags, size = out.tags(), (out.width, out.height)
                        layout = f"{out.count} band(s) of {out.dtypes[0]}"
                        *_, (_, last) = out.block_windows(1)
                        out.read(window=last)  # a truncated file fails here
                count, dtype = {"class": (1, "uint8"), "color": (4, "uint8")}.get(
                    kind, (self.info.num_classes, self.options.probabilities)
                )
                expected = f"{count} band(s) of {dtype}"
        except Exception as error:  # whatever the reader raises, the file cannot be used
            return f"unreadable ({first_line(error.__cause__ or error)})"
        if size != (shape[1], shape[0]):
            return f"{size[0]} x {size[1]} px, not the input's {shape[1]} x {shape[0]}"
        if layout != expected:
            return f"{layout}, not {expected}"
        if "bicorseg_settings" not in tags:
            return "not written by bicorseg predict"
        if tags.get("bicorseg_input") != path.name:
            return f"made from another input ({tags.get('bicorseg_input')})"
        if not self.info.sha256 or tags.get("bicorseg_checkpoint_sha256") != self.info.sha256:
            return "made by another checkpoint"
        if tags["bicorseg_settings"] != self.settings(kind):
            return f"settings differ ({tags['bicorseg_settings']}; now {self.settings(kind)})"
        return None

    def existing_outputs(
        self, path: Path, out_dir: Path, shape: tuple[int, int]
    ) -> tuple[bool, dict[Path, str]]:
        """Whether every output of ``path`` exists and verifies, and why each existing one does not."""
        complete, problems = True, {}
        for kind, target in self.targets(path, out_dir).items():
            if not target.exists():
                complete = False
            elif (reason := self.verify(kind, target, path, shape)) is not None:
                problems[target] = reason
        return complete and not problems, problems

    def _skip(self, path: Path, out_dir: Path, shape: tuple[int, int]) -> bool:
        """True when this run's outputs of ``path`` are already there; refuses to replace others."""
        done, problems = self.existing_outputs(path, out_dir, shape)
        refuse_existing(problems, self.options.overwrite)
        return done and not self.options.overwrite

    def predict_file(
        self, path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress | None = None
    ) -> FileResult:
        """Predict one file into ``out_dir``; skipped when its outputs exist and verify (module docstring)."""
        import time

        path, out_dir = raster_access.input_path(path), Path(out_dir)
        targets = self.targets(path, out_dir)
        check_targets({path: targets})
        result = FileResult(path, targets)
        plan = self.inspect(path)
        if self._skip(path, out_dir, plan.shape):
            result.skipped = True
            return result
        out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = stack.enter_context(open_raster(path))
            if (src.height, src.width) != plan.shape:
                raise InputError(f"{path} changed while it was being predicted")
            reader = RasterReader(src, path, plan, *statistics(self.info))
            outputs = OutputSet(targets, stack)
            try:
                self._predict(src, path, reader, outputs, progress)
                outputs.commit()
            except BaseException:
                outputs.abort()
                raise
        result.seconds = time.perf_counter() - start
        return result

    def _predict(
        self, src, path, reader: RasterReader, outputs: OutputSet, progress: Progress | None
    ) -> None:
        opts, info = self.options, self.info
        height, width = src.height, src.width
        plain = outputs.targets["class"].suffix == ".png"
        palette = info.palette
        engine = SlidingWindow(
            height,
            width,
            info.num_classes,
            opts.tile,
            opts.overlap,
            opts.batch_size,
            chunk=opts.chunk,
            device=opts.device,
        )
        class_map = np.full((height, width), NODATA, np.uint8) if plain else None
        dst_class = dst_prob = dst_color = None
        if not plain:
            dst_class = outputs.open_geotiff(
                "class", geotiff_profile(src, height, width, count=1, dtype="uint8", nodata=NODATA)
            )
            dst_class.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(palette)})
            dst_class.set_band_description(1, "class")
            dst_class.update_tags(**self._tags(path, "class"))
            if opts.color:
                dst_color = outputs.open_geotiff(
                    "color",
                    geotiff_profile(
                        src, height, width, count=4, dtype="uint8", photometric="RGB", alpha="YES"
                    ),
                )
                dst_color.update_tags(**self._tags(path, "color"))
        if opts.probabilities:
            floating = opts.probabilities == "float32"
            dst_prob = outputs.open_geotiff(
                "probabilities",
                geotiff_profile(
                    None if plain else src,
                    height,
                    width,
                    count=info.num_classes,
                    dtype=opts.probabilities,
                    nodata=float("nan") if floating else NODATA,
                ),
            )
            for i, name in enumerate(info.class_names, start=1):
                dst_prob.set_band_description(i, name)
            if not floating:
                dst_prob.scales = [1.0 / PROB_SCALE] * info.num_classes
            dst_prob.update_tags(**self._tags(path, "probabilities"))

        def write(y0: int, x0: int, values: np.ndarray, valid: np.ndarray) -> None:
            h, w = valid.shape
            window = Window(x0, y0, w, h)
            classes = values.argmax(axis=0).astype(np.uint8)
            classes[~valid] = NODATA
            if plain:
                class_map[y0 : y0 + h, x0 : x0 + w] = classes
            else:
                dst_class.write(classes, 1, window=window)
                if dst_color is not None:
                    dst_color.write(_rgba(palette, classes), window=window)
            if dst_prob is not None:
                if opts.probabilities == "float32":
                    probs = values
                    probs[:, ~valid] = np.nan
                else:
                    probs = np.rint(values * PROB_SCALE).astype(np.uint8)
                    probs[:, ~valid] = NODATA
                dst_prob.write(probs, window=window)

        if progress is not None:
            progress.start(path.name, engine.total_tiles)
        engine.run(self.probs_fn, reader, write, progress.advance if progress is not None else None)
        if plain:
            images = {"class": class_map}
            if opts.color:
                images["color"] = np.moveaxis(_rgba(palette, class_map), 0, -1)
            for kind, array in images.items():
                try:
                    Image.fromarray(array).save(
                        outputs.temp_for(kind), format="PNG", pnginfo=_png_info(self._tags(path, kind))
                    )
                except OSError as error:
                    raise _write_error(outputs.targets[kind], error) from error

    def _tags(self, path: Path, kind: str) -> dict[str, str]:
        from bicorseg import __version__

        return {
            "bicorseg_version": __version__,
            "bicorseg_checkpoint": self.info.source,
            "bicorseg_checkpoint_sha256": self.info.sha256 or "",
            "bicorseg_input": path.name,
            "bicorseg_classes": json.dumps(self.info.class_names),
            "bicorseg_settings": self.settings(kind),
            "bicorseg_tta": describe_tta(self.tta),
        }


# --- many files ------------------------------------------------------------------------------------


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path | raster_access.VsiPath]:
    """The image files named by ``inputs`` (files, or folders searched non-recursively), in order.

    A URL or GDAL ``/vsi...`` path is taken as it is, as a :class:`~bicorseg.raster_access.VsiPath`
    (see :func:`~bicorseg.raster_access.input_path`). A file named twice (by any path) is taken once.
    """
    if not inputs:
        raise InputError("no input given")
    found: list[Path | raster_access.VsiPath] = []
    for item in map(raster_access.input_path, inputs):
        if isinstance(item, raster_access.VsiPath):
            found.append(item)
        elif item.is_dir():
            files = sorted(
                p
                for p in item.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not files:
                raise InputError(f"no images in folder {item} (looked for {', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif item.is_file():
            found.append(item)
        else:
            raise InputError(f"input not found: {item}")
    unique: dict[Any, Path | raster_access.VsiPath] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def check_targets(jobs: Mapping[Path, Mapping[str, Path]]) -> None:
    """Refuse an output that is an input (same path, through a link, or a hard link of it) and an
    output that two inputs would share (names compared without case, as some file systems do)."""
    inputs: dict[Any, Path] = {}
    for path in jobs:
        inputs[path.resolve()] = path
        with suppress(OSError):
            stat = path.stat()
            inputs[(stat.st_dev, stat.st_ino)] = path
    owners: dict[tuple[Path, str], tuple[Path, Path]] = {}
    for path, targets in jobs.items():
        for target in targets.values():
            resolved = target.resolve()
            same = inputs.get(resolved)
            if same is None:
                with suppress(OSError):
                    stat = target.stat()
                    same = inputs.get((stat.st_dev, stat.st_ino))
            if same is not None:
                raise InputError(
                    f"the output {target} of {path} would overwrite the input {same}: choose another output folder"
                )
            first, first_target = owners.setdefault(
                (resolved.parent, resolved.name.casefold()), (path, target)
            )
            if first != path:
                raise InputError(
                    f"{first} and {path} would both write {first_target}"
                    + (
                        ""
                        if first_target.name == target.name
                        else f" (and {target.name}, the same name without case)"
                    )
                    + ": rename one or predict them into different folders"
                )


def refuse_existing(problems: Mapping[Path, str], overwrite: bool) -> None:
    """Existing outputs that are not this run's result: replaced with ``overwrite`` (one warning each),
    refused without it (one line naming the first and why)."""
    if overwrite:
        for target, reason in problems.items():
            warnings.warn(f"{target}: {reason}; recomputing it", stacklevel=3)
        return
    if problems:
        target, reason = next(iter(problems.items()))
        more = f" ({len(problems) - 1} more existing output(s) like it)" if len(problems) > 1 else ""
        raise OutputError(f"{target} exists: {reason}; use `overwrite` to recompute it{more}")


_WORKER: Predictor | None = None


def _init_worker(checkpoint: str, options: PredictOptions, engine: str, threads: int, sha256: str) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = Predictor.from_checkpoint(checkpoint, options, engine, sha256=sha256)


def _work(path: Path, out_dir: Path) -> FileResult:
    assert _WORKER is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the main process already warned while checking the inputs
        return _WORKER.predict_file(path, out_dir)


def predict_files(
    inputs: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PredictOptions | None = None,
    engine: str = "torch",
    workers: int = 1,
    progress: Progress | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Predict every file of ``inputs`` into ``out_dir``; ``workers > 1`` splits them across processes.

    Before any prediction starts, every input is inspected (readable, band count, undeclared
    nodata; warnings are issued here), the outputs are checked against the inputs and each other,
    and existing outputs are verified (see the module docstring). With several workers the
    progress advances by files, each worker using ``cpus / workers`` threads.
    """
    options = options or PredictOptions()
    paths = find_inputs(inputs)
    out_dir = Path(out_dir)
    if any(p.is_dir() and p.resolve() == out_dir.resolve() for p in map(Path, inputs)):
        raise ConfigError(f"{out_dir} is an input folder: choose another folder", key="output")
    predictor = Predictor.from_checkpoint(checkpoint, options, engine)
    plans = {path: predictor.inspect(path) for path in paths}
    check_targets({path: predictor.targets(path, out_dir) for path in paths})
    results: list[FileResult] = []
    todo: list[Path] = []
    problems: dict[Path, str] = {}
    for path in paths:
        done, bad = predictor.existing_outputs(path, out_dir, plans[path].shape)
        problems.update(bad)
        if done and not options.overwrite:
            results.append(FileResult(path, predictor.targets(path, out_dir), skipped=True))
            if on_result is not None:
                on_result(results[-1])
        else:
            todo.append(path)
    refuse_existing(problems, options.overwrite)
    workers = max(1, min(workers, len(todo)))
    if workers == 1:
        for path in todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results.append(predictor.predict_file(path, out_dir, progress))
            if on_result is not None:
                on_result(results[-1])
        return results
    sha256 = predictor.info.sha256
    del predictor  # each worker loads its own copy
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
    if progress is not None:
        progress.start(f"{len(todo)} files, {workers} workers", len(todo))
    with futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(checkpoint), replace(options), engine, threads, sha256),
    ) as pool:
        jobs = [pool.submit(_work, path, out_dir) for path in todo]
        try:
            for job in futures.as_completed(jobs):
                results.append(job.result())
                if progress is not None:
                    progress.advance(1)
                if on_result is not None:
                    on_result(results[-1])
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
    order = {p: i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order[r.input])
