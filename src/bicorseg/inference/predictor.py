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

Nodata: a pixel is nodata where the raster's mask says so (nodata value, alpha band or internal
mask: GDAL's dataset mask) or where any band is NaN or infinite. An alpha band beyond the model's
bands (an RGBA picture for an RGB model) is used as the mask only; a band the model reads as data is
never used as a mask, even if GDAL labels it alpha. Nodata pixels are replaced by the
band mean before the model sees them, tiles without a valid pixel are skipped, and the output is
nodata there. Every output is written to a hidden temporary file beside the target and renamed when
complete; a file whose outputs all exist is skipped unless ``overwrite`` is set.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from torch import nn

from bicorseg.errors import CheckpointError, ConfigError, InputError, OutputError, first_line
from bicorseg.inference.engine import DEFAULT_CHUNK, SlidingWindow
from bicorseg.inference.tta import TTA_MODES, with_tta
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, DatasetSpec

NODATA = 255
PROB_SCALE = 254  # uint8 probabilities: round(p * 254); 255 is left for nodata
PLAIN_DRIVERS = {"PNG", "JPEG", "BMP", "GIF", "WEBP"}
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt", ".bmp", ".webp")
# GDAL's block cache in bytes (rasterio passes the number as bytes): GDAL's default, 5 % of the RAM,
# would fill up with blocks of a large raster and make the memory grow with its size
GDAL_CACHE_BYTES = 32 * 2**20
PROBABILITY_TYPES = ("uint8", "float32")


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
    tta: str = "none"
    probabilities: str | None = None  # None, "uint8" or "float32"
    color: bool = False
    overwrite: bool = False
    chunk: int = DEFAULT_CHUNK
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.tta not in TTA_MODES:
            raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        if self.probabilities not in (None, *PROBABILITY_TYPES):
            raise ConfigError(f"--probabilities must be uint8 or float32, got {self.probabilities!r}")
        if self.tile < 32:
            raise ConfigError(f"--tile must be at least 32 pixels, got {self.tile}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")


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
    tta: str = "none",
    *,
    valid: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities ``N x H x W`` (float32) of an image ``bands x H x W`` by sliding windows.

    ``image`` must already be normalised as the model expects (``(x - mean) / std``, as the
    dataset samples are). ``model`` is any function from a batch ``B x bands x h x w`` to logits
    ``B x N x h x w`` (a :class:`~bicorseg.models.BiCoRSeg` is put in evaluation mode for the call).
    Tiles overlap by ``overlap`` and are blended with smooth weights; ``tta`` is ``none``, ``lr`` or
    ``d4``. Pixels where ``valid`` (``H x W`` bool) is False are zeroed before the model sees them
    and get probability 0 for every class.
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


def open_raster(path: Path) -> rasterio.DatasetReader:
    """Open an image or raster with GDAL, or raise an :class:`InputError` naming it."""
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as error:
        raise InputError(
            f"cannot read {path}: not an image or raster GDAL can open ({first_line(error)})"
        ) from error


def input_bands(src: rasterio.DatasetReader, path: Path, info: ModelInfo) -> list[int]:
    """The band indexes fed to the model; an alpha band beyond the model's bands is used as the mask."""
    count = src.count
    if count == info.in_channels + 1 and src.colorinterp[-1] == rasterio.enums.ColorInterp.alpha:
        count -= 1  # e.g. an RGBA PNG for an RGB model: alpha already enters the dataset mask
    if count != info.in_channels:
        raise InputError(
            f"{path} has {src.count} band(s) but the checkpoint {info.source} expects {info.in_channels}"
        )
    if np.dtype(src.dtypes[0]).kind not in "uif":
        raise InputError(f"{path} has pixel type {src.dtypes[0]}, which is not a real number type")
    return list(range(1, count + 1))


def normalisation(info: ModelInfo, dtype: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (raw input units) from the checkpoint; never rescales silently.

    A checkpoint without dataset facts falls back to ImageNet 8-bit statistics (with a warning)
    if the model takes 3 bands, and is refused otherwise.
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
        mean, std = IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT
    else:
        mean, std = info.dataset.mean, info.dataset.std
    bits = np.dtype(dtype).itemsize * 8 if np.dtype(dtype).kind in "ui" else None
    if bits is not None and bits > 8 and max(mean) <= 255:
        warnings.warn(
            f"{path} is {dtype} but the checkpoint's normalisation is in 8-bit units "
            f"(mean {max(mean):.4g}): values are used as they are, not rescaled",
            stacklevel=2,
        )
    elif bits == 8 and max(mean) > 255:
        warnings.warn(
            f"{path} is 8-bit but the checkpoint's normalisation is not (mean up to {max(mean):.4g})",
            stacklevel=2,
        )
    return np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]


class RasterReader:
    """Normalised windows of a rasterio dataset with their validity mask (see module docstring)."""

    def __init__(self, src: rasterio.DatasetReader, path: Path, bands: list[int], mean, std) -> None:
        self.src, self.path, self.bands, self.mean, self.std = src, path, bands, mean, std
        alpha = rasterio.enums.ColorInterp.alpha
        # GDAL marks the 4th band of a 4-band byte GeoTIFF as alpha by default; when the model reads
        # that band as data (e.g. near infrared), its values must not mask pixels: use nodata only.
        self.alpha_is_data = any(src.colorinterp[b - 1] == alpha for b in bands)

    def _mask(self, window: Window, data: np.ndarray) -> np.ndarray:
        if not self.alpha_is_data:
            return self.src.dataset_mask(window=window) > 0
        nodata = self.src.nodata
        if nodata is None or np.isnan(nodata):
            return np.ones(data.shape[1:], bool)
        return (data != nodata).any(axis=0)  # GDAL's rule: nodata where every band is nodata

    def __call__(self, y0: int, x0: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        window = Window(x0, y0, width, height)
        try:
            data = self.src.read(self.bands, window=window, out_dtype="float32")
            valid = self._mask(window, data)
        except RasterioError as error:
            raise InputError(f"cannot read {self.path}: {first_line(error)}") from error
        valid &= np.isfinite(data).all(axis=0)
        data -= self.mean
        data /= self.std
        data[:, ~valid] = 0.0  # the band mean: masked pixels never feed garbage to the model
        return data, valid


# --- writing outputs -------------------------------------------------------------------------------


def temp_path(target: Path) -> Path:
    """A hidden temporary name beside ``target`` (renamed to it when complete)."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def remove_stale_temps(target: Path) -> None:
    """Temporary files an earlier, killed run left for ``target``."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)


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
    profile.update(extra)
    profile.setdefault("predictor", 3 if np.dtype(profile["dtype"]).kind == "f" else 2)
    return profile


class OutputSet:
    """The output files of one input, written in windows to temporary files and renamed on commit."""

    def __init__(self, targets: dict[str, Path], stack: ExitStack) -> None:
        self.targets, self.stack = targets, stack
        self.temps: dict[str, Path] = {}
        self.datasets: dict[str, Any] = {}

    def open_geotiff(self, kind: str, profile: dict) -> Any:
        temp = temp_path(self.targets[kind])
        self.temps[kind] = temp
        dst = rasterio.open(temp, "w", **profile)
        self.datasets[kind] = dst
        return dst

    def temp_for(self, kind: str) -> Path:
        self.temps[kind] = temp_path(self.targets[kind])
        return self.temps[kind]

    def commit(self) -> None:
        """Close, check that every GeoTIFF reads back whole, then rename into place.

        GDAL reports a failed block write (a full disk) only as a logged error when the file is
        flushed, so a file is read back block by block before it may take its final name.
        """
        for kind, dst in self.datasets.items():
            try:
                dst.close()
                _read_back(self.temps[kind])
            except (OSError, RasterioError) as error:
                raise _write_error(self.targets[kind], error) from error
        # the class map is renamed last: its presence marks a finished input
        for kind in sorted(self.temps, key=lambda k: k == "class"):
            os.replace(self.temps[kind], self.targets[kind])

    def abort(self) -> None:
        for dst in self.datasets.values():
            try:
                dst.close()
            except Exception:  # closing a half-written file may fail; it is deleted anyway
                pass
        for temp in self.temps.values():
            temp.unlink(missing_ok=True)


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


class Predictor:
    """A model applied to image and raster files (see the module docstring for formats).

    Args:
        logits_fn: a normalised batch ``B x bands x h x w`` -> logits ``B x N x h x w``.
        info: classes, bands and normalisation of the model.
        options: tiles, TTA and outputs.
    """

    def __init__(
        self, logits_fn: Callable[[torch.Tensor], torch.Tensor], info: ModelInfo, options: PredictOptions
    ):
        if info.num_classes > NODATA:
            raise CheckpointError(
                f"{info.source} has {info.num_classes} classes; at most 255 fit a uint8 map"
            )
        self.logits_fn, self.info, self.options = logits_fn, info, options
        self.probs_fn = with_tta(logits_fn, options.tta)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike, options: PredictOptions, engine: str = "torch"
    ) -> Predictor:
        """A predictor from a bicorseg checkpoint (``engine="torch"``) or an exported ONNX file."""
        checkpoint = Path(checkpoint)
        if engine == "onnx":
            from bicorseg.inference.onnx import OnnxModel

            model = OnnxModel(checkpoint, device=options.device)
            return cls(model, model.info, replace(options, tile=model.tile))  # the graph's fixed tile
        if engine != "torch":
            raise ConfigError(f"--engine must be torch or onnx, got {engine!r}")
        from bicorseg.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint).build_model().to(options.device)
        return cls(model, model_info(model, str(checkpoint)), options)

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

    def check(self, path: Path) -> None:
        """Open the header of ``path`` and check its bands (fails before any work is done)."""
        with open_raster(path) as src:
            input_bands(src, path, self.info)

    def predict_file(
        self, path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress | None = None
    ) -> FileResult:
        """Predict one file into ``out_dir``; skipped when its outputs exist (unless ``overwrite``)."""
        import time

        path, out_dir = Path(path), Path(out_dir)
        targets = self.targets(path, out_dir)
        result = FileResult(path, targets)
        if not self.options.overwrite and all(t.exists() for t in targets.values()):
            result.skipped = True
            return result
        out_dir.mkdir(parents=True, exist_ok=True)
        for target in targets.values():
            remove_stale_temps(target)
        start = time.perf_counter()
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = stack.enter_context(open_raster(path))
            bands = input_bands(src, path, self.info)
            mean, std = normalisation(self.info, src.dtypes[0], path)
            outputs = OutputSet(targets, stack)
            try:
                self._predict(src, path, bands, mean, std, outputs, progress)
                outputs.commit()
            except BaseException:
                outputs.abort()
                raise
        result.seconds = time.perf_counter() - start
        return result

    def _predict(self, src, path, bands, mean, std, outputs: OutputSet, progress: Progress | None) -> None:
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
            dst_class.update_tags(**self._tags(path))
            if opts.color:
                dst_color = outputs.open_geotiff(
                    "color",
                    geotiff_profile(
                        src, height, width, count=4, dtype="uint8", photometric="RGB", alpha="YES"
                    ),
                )
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
            dst_prob.update_tags(**self._tags(path))

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
        reader = RasterReader(src, path, bands, mean, std)
        engine.run(self.probs_fn, reader, write, progress.advance if progress is not None else None)
        if plain:
            images = {"class": class_map}
            if opts.color:
                images["color"] = np.moveaxis(_rgba(palette, class_map), 0, -1)
            for kind, array in images.items():
                try:
                    Image.fromarray(array).save(outputs.temp_for(kind), format="PNG")
                except OSError as error:
                    raise _write_error(outputs.targets[kind], error) from error

    def _tags(self, path: Path) -> dict[str, str]:
        from bicorseg import __version__

        opts = self.options
        return {
            "bicorseg_version": __version__,
            "bicorseg_checkpoint": self.info.source,
            "bicorseg_input": path.name,
            "bicorseg_classes": json.dumps(self.info.class_names),
            "bicorseg_settings": f"tile={opts.tile} overlap={opts.overlap} tta={opts.tta}",
        }


# --- many files ------------------------------------------------------------------------------------


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs`` (files, or folders searched non-recursively), in order."""
    if not inputs:
        raise InputError("no input given")
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
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
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems and stems[path.stem] != path:
            raise InputError(f"{path} and {stems[path.stem]} would write the same output name {path.stem!r}")
        stems[path.stem] = path
    return list(dict.fromkeys(found))


_WORKER: Predictor | None = None


def _init_worker(checkpoint: str, options: PredictOptions, engine: str, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = Predictor.from_checkpoint(checkpoint, options, engine)


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

    Every input header is checked (readable, band count) before any prediction starts. With
    several workers the progress advances by files, each worker using ``cpus / workers`` threads.
    """
    options = options or PredictOptions()
    paths = find_inputs(inputs)
    out_dir = Path(out_dir)
    if any(p.is_dir() and p.resolve() == out_dir.resolve() for p in map(Path, inputs)):
        raise ConfigError(f"--output {out_dir} is an input folder: choose another folder")
    predictor = Predictor.from_checkpoint(checkpoint, options, engine)
    for path in paths:
        predictor.check(path)
        with open_raster(path) as src:
            normalisation(predictor.info, src.dtypes[0], path)  # warns once per file, here
    results: list[FileResult] = []
    todo = [
        p
        for p in paths
        if options.overwrite or not all(t.exists() for t in predictor.targets(p, out_dir).values())
    ]
    for path in paths:
        if path not in todo:
            results.append(FileResult(path, predictor.targets(path, out_dir), skipped=True))
            if on_result is not None:
                on_result(results[-1])
    workers = max(1, min(workers, len(todo)))
    if workers == 1:
        for path in todo:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results.append(predictor.predict_file(path, out_dir, progress))
            if on_result is not None:
                on_result(results[-1])
        return results
    del predictor  # each worker loads its own copy
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
    if progress is not None:
        progress.start(f"{len(todo)} files, {workers} workers", len(todo))
    with futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(checkpoint), replace(options), engine, threads),
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
