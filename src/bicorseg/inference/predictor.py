"""One model applied to one image or raster of any size: windowed reads, blended tiles, safe writes.

* :func:`predict_array`: sliding-window probabilities for an image already in memory (used by the
  whole-tile evaluation).
* :class:`Predictor`: one model (PyTorch or ONNX) applied to files. A raster is planned as blocks
  of the global tile grid (:mod:`.engine`); each block is read in windows, normalised with the
  checkpoint's statistics (:mod:`.raster_io`), computed from every tile over it and written strip by
  strip (:mod:`.writers`), so memory does not depend on the raster's size. The one-process run is
  the blocks run in sequence; :mod:`.batch` runs the same blocks as units across processes,
  shards or a Ray cluster (:mod:`.units`), with the same bytes.

What the outputs are, how inputs without georeferencing are placed (``crs``, ``pixel_size``), what
their tags record and when a rerun skips, replaces or refuses an existing output is in
``docs/prediction.md`` (Outputs; Reruns and existing outputs). Every check comes before any work
(:meth:`Predictor.check_inputs`), the model's logits on a test tile included
(:func:`check_finite_logits`: weights that overflow); a pixel where the model's output is not
finite on a real input is nodata, counted per file in one warning (:func:`warn_nonfinite`). With an
area of interest only the tiles that hold a pixel inside it are computed, and every pixel outside
it is nodata.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
from torch import nn

from bicorseg import raster_access
from bicorseg.atomic import sha256_file
from bicorseg.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BLOCK,
    DEFAULT_DEVICE,
    DEFAULT_OVERLAP,
    DEFAULT_PRECISION,
    DEFAULT_TILE,
    ENGINES,
    MAX_CLASSES,
    MIN_TILE,
    VERSION,
)
from bicorseg.device import check_threads, resolve_device, resolve_threads, torch_threads
from bicorseg.errors import BicorsegWarning, CheckpointError, ConfigError, InputError
from bicorseg.inference.engine import MIN_BLOCK, Block, SlidingWindow
from bicorseg.inference.model_info import ModelInfo, model_info
from bicorseg.inference.raster_io import (
    Georeference,
    InputPlan,
    RasterReader,
    inspect_input,
    is_picture,
    rescale_tag,
)
from bicorseg.inference.tiling import check_overlap
from bicorseg.inference.tta import (
    TTASpec,
    check_tta_mode,
    describe_tta,
    parse_scales,
    resolve_tta,
    tta_name,
    with_tta,
)
from bicorseg.inference.writers import (
    PROBABILITY_TYPES,
    MapLayout,
    check_targets,
    existing_outputs,
    output_tags,
    refuse_existing,
    style_paths,
    write_style,
    writing_maps,
)
from bicorseg.precision import check_precision, resolve_precision, with_precision
from bicorseg.raster_access import InputPath
from bicorseg.rescale import check_rescale
from bicorseg.typedconfig import check_choice

# write(y0, x0, arrays): encoded output arrays (MapLayout.encode) at output pixel (y0, x0)
SinkFn = Callable[[int, int, dict[str, np.ndarray]], None]


class Progress(Protocol):
    """What the predictor reports to a progress display."""

    def start(self, name: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass
class PredictOptions:
    """Options of ``bicorseg predict`` (see :mod:`.writers` for the outputs).

    ``tile`` and ``overlap`` left as None take the checkpoint's (:class:`bicorseg.checkpoint.Tiling`).
    ``block`` is the side of the units of work in pixels (memory grows with it; see :mod:`.engine`).
    ``threads`` is torch's CPU thread count in every process that computes (None: this process's
    count when the predictor is made); on a CPU it is part of the settings, since the last bit of a
    sum depends on how the threads split it.
    """

    tile: int | None = None
    overlap: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    tta: str = "none"  # a mode of bicorseg.inference.tta.TTA_MODES
    tta_scales: tuple[float, ...] | None = None  # extra input scales (not with "paper")
    tta_merge: str | None = None  # "logits" or "probs" (default: the mode's)
    probabilities: str | None = None  # None, "uint8" or "float32"
    color: bool = False
    confidence: bool = False
    aoi: str | None = None  # polygons (any OGR format with a CRS): predict only inside them
    overwrite: bool = False
    block: int = DEFAULT_BLOCK
    device: str = DEFAULT_DEVICE  # auto (the GPU if there is one), cpu, cuda, cuda:N; resolved here
    precision: str = DEFAULT_PRECISION  # auto, bf16, fp16, fp32 (bicorseg.precision); ONNX runs fp32
    rescale: str = "none"  # a mode of bicorseg.rescale (auto, percentile) or "MIN,MAX"
    crs: str | None = None  # the CRS of inputs without one (anything rasterio reads, e.g. EPSG:32633)
    pixel_size: float | None = None  # pixel size in CRS units of inputs without a transform
    require_georeference: bool = False  # refuse inputs whose outputs would have no CRS and transform
    threads: int | None = None

    def __post_init__(self) -> None:
        self.device = str(resolve_device(self.device))
        if self.crs is not None:
            try:
                with rasterio.Env():  # GDAL's errors reach the exception, not the terminal as well
                    self.crs = rasterio.crs.CRS.from_user_input(self.crs).to_string()
            except Exception as error:  # rasterio's CRSError, or a TypeError for odd input
                raise ConfigError(f"{self.crs!r} is not a coordinate reference system", key="crs") from error
        if self.pixel_size is not None:
            if not self.pixel_size > 0:
                raise ConfigError(f"must be positive (CRS units), got {self.pixel_size}", key="pixel_size")
            if self.crs is None:
                raise ConfigError(
                    "give `crs` with it: a pixel size needs a CRS to be placed in", key="pixel_size"
                )
        check_tta_mode(self.tta)
        self.tta_scales = parse_scales(self.tta_scales)
        if self.probabilities not in (None, *PROBABILITY_TYPES):
            raise ConfigError(f"must be uint8 or float32, got {self.probabilities!r}", key="probabilities")
        if self.tile is not None and self.tile < MIN_TILE:
            raise ConfigError(f"must be at least {MIN_TILE} pixels, got {self.tile}", key="tile")
        if self.overlap is not None:
            check_overlap(self.overlap)
        if self.batch_size < 1:
            raise ConfigError(f"must be at least 1, got {self.batch_size}", key="batch_size")
        if self.block < MIN_BLOCK:
            raise ConfigError(f"must be at least {MIN_BLOCK} pixels, got {self.block}", key="block")
        check_precision(self.precision)
        self.rescale = check_rescale(self.rescale)
        check_threads(self.threads)


@dataclass
class FileResult:
    """What happened to one input file (``units``/``computed``: its blocks, and those computed here)."""

    input: InputPath
    outputs: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0
    units: int = 0
    computed: int = 0
    assembled: bool = True  # False: a shard's parts only, assembled later by the mosaic
    nonfinite: int = 0  # pixels written as nodata because the model gave no finite value there


@dataclass(frozen=True)
class CheckedInput:
    """One input after :meth:`Predictor.check_inputs`: what inspecting it decided (its path
    included), its outputs, and whether they are this run's finished result (not computed again)."""

    plan: InputPlan
    targets: dict[str, Path]
    finished: bool = False

    @property
    def path(self) -> InputPath:
        return self.plan.path


def warn_nonfinite(path: Any, count: int) -> None:
    """The one line that says how many pixels had no finite model output (written as nodata)."""
    if count:
        warnings.warn(
            f"{path}: {count} pixel(s) where the model gave no finite value (NaN or overflow) are "
            "written as nodata",
            BicorsegWarning,
            stacklevel=3,
        )


# --- in-memory prediction ---------------------------------------------------------------------------


def predict_array(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    tile: int = DEFAULT_TILE,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
    array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, np.float32)
    if array.ndim != 3:
        raise InputError(f"predict_array expects an image bands x H x W, got shape {array.shape}")
    bands, height, width = array.shape
    mask = np.ones((height, width), bool) if valid is None else np.asarray(valid, bool)
    if mask.shape != (height, width):
        raise InputError(f"valid mask {mask.shape} does not match the image {height} x {width}")
    mask = mask & np.isfinite(array).all(axis=0)
    array = np.where(mask, array, np.float32(0.0))  # a new contiguous array: the caller's is kept
    if device is None:
        params = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        device = params.device if params is not None else "cpu"
    with _evaluating(model):
        probs_fn = with_tta(model, tta)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "num_classes"):
            num_classes = int(config.num_classes)
        else:  # a bare function: ask it once on a small blank input
            with torch.inference_mode():
                num_classes = int(probs_fn(torch.zeros(1, bands, 32, 32, device=device)).shape[1])
        out = np.zeros((num_classes, height, width), np.float32)

        def write(y0: int, x0: int, values: np.ndarray, ok: np.ndarray) -> None:
            h, w = ok.shape
            out[:, y0 : y0 + h, x0 : x0 + w] = np.where(ok, values, 0.0)

        engine = SlidingWindow(  # one block: the image is in memory anyway
            height,
            width,
            num_classes,
            tile,
            overlap,
            batch_size,
            block=max(height, width, MIN_BLOCK),
            device=device,
        )
        engine.run(
            probs_fn, lambda y, x, h, w: (array[:, y : y + h, x : x + w], mask[y : y + h, x : x + w]), write
        )
    return out


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """A module in evaluation mode within the block (back in training mode after, if it was)."""
    training = isinstance(model, nn.Module) and model.training
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()


# --- the predictor ---------------------------------------------------------------------------------


def checkpoint_info(checkpoint: str | os.PathLike, engine: str = "torch") -> ModelInfo:
    """The :class:`ModelInfo` of a checkpoint (``engine="onnx"``: an exported file), without building
    the model."""
    check_choice("engine", engine, ENGINES)
    if engine == "onnx":
        from bicorseg.inference.onnx import OnnxModel

        return OnnxModel(checkpoint).info
    from bicorseg.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    config = loaded.model_config
    return ModelInfo(
        config.num_classes, config.in_channels, loaded.dataset, str(checkpoint), tiling=loaded.tiling
    )


PROBE_SIZE = 64  # side of the test tile every model is run on once before it makes a map


def check_finite_logits(logits_fn: Callable, info: ModelInfo, options: PredictOptions) -> None:
    """Run the model once on a test tile (normalised values from -2 to 2, the range of real input;
    :data:`PROBE_SIZE` px or the tile if smaller) and refuse it in one line when its logits are not
    all finite: finite weights can still overflow (in fp16 sooner than in bf16 or fp32), and such a
    model would make a map of nothing."""
    size = min(PROBE_SIZE, options.tile or PROBE_SIZE)
    count = info.in_channels * size * size
    probe = (2.0 * torch.sin(torch.arange(count, dtype=torch.float32) * 0.37)).reshape(
        1, info.in_channels, size, size
    )
    with _evaluating(logits_fn), torch.inference_mode():
        logits = logits_fn(probe.to(options.device))
    if not bool(torch.isfinite(logits).all()):
        raise CheckpointError(
            f"{info.source}: the model's logits on a test tile are not finite at precision "
            f"{options.precision} (its weights overflow): it cannot make a map"
        )


class Predictor:
    """A model applied to image and raster files (see the module docstring for formats).

    Args:
        logits_fn: a normalised batch ``B x bands x h x w`` -> logits ``B x N x h x w``.
        info: classes, bands, normalisation and default tiling of the model (``info.sha256``
            identifies it in the outputs; a module given without it is identified by a hash of its
            weights).
        options: tiles, TTA and outputs (``tile``/``overlap`` None: ``info.tiling``).
        engine: ``"torch"`` or ``"onnx"``, recorded in the outputs' settings.
    """

    def __init__(
        self,
        logits_fn: Callable[[torch.Tensor], torch.Tensor],
        info: ModelInfo,
        options: PredictOptions,
        engine: str = "torch",
    ):
        if info.num_classes > MAX_CLASSES:
            raise CheckpointError(
                f"{info.source} has {info.num_classes} classes; at most {MAX_CLASSES} fit a uint8 map"
            )
        if info.sha256 is None and isinstance(logits_fn, nn.Module):  # a model in memory: its weights' hash
            digest = hashlib.sha256()
            for name, tensor in logits_fn.state_dict().items():
                digest.update(name.encode())
                digest.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
            info = replace(info, sha256="weights:" + digest.hexdigest())
        options = replace(
            options,
            tile=options.tile or info.tiling.tile,
            overlap=info.tiling.overlap if options.overlap is None else options.overlap,
            threads=resolve_threads(options.threads),
        )
        self.logits_fn, self.info, self.options, self.engine = logits_fn, info, options, engine
        self.tta = resolve_tta(options.tta, info.dataset, options.tta_scales, options.tta_merge)
        self.layout = MapLayout(
            tuple(info.class_names),
            tuple(tuple(int(c) for c in colour) for colour in info.palette),
            options.probabilities,
            options.color,
            options.confidence,
            disagreement=options.confidence and self.tta.num_passes > 1,
        )
        self.probs_fn = with_tta(logits_fn, self.tta, disagreement=self.layout.disagreement)
        self._logits_checked = False
        self._aois: dict[str, Any] = {}
        self._aoi_sha256: str | None = None
        if options.aoi is not None:
            from bicorseg.gis import require_vector

            require_vector()
            from bicorseg.gis.layers import LAYER_SEPARATOR

            aoi_file = Path(os.fspath(options.aoi).partition(LAYER_SEPARATOR)[0])  # PATH|layername=NAME
            if not aoi_file.is_file():
                raise InputError(f"AOI: {aoi_file} does not exist")
            self._aoi_sha256 = sha256_file(aoi_file)

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
        check_choice("engine", engine, ENGINES)
        if engine == "onnx":
            from bicorseg.inference.onnx import OnnxModel

            if options.precision not in ("auto", "fp32"):
                raise ConfigError(
                    f"the ONNX engine runs in fp32 only, got {options.precision} (use fp32 or auto)",
                    key="precision",
                )
            with torch_threads(options.threads):  # the session takes torch's thread count (None: as it is)
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
        from bicorseg.checkpoint import checkpoint_sha256, load_checkpoint

        loaded = load_checkpoint(checkpoint)  # load_model's steps, keeping the checkpoint's tiling
        precision = resolve_precision(options.precision, options.device)
        model = with_precision(loaded.build_model().to(options.device), precision)
        info = replace(
            model_info(model, str(checkpoint), loaded.tiling), sha256=sha256 or checkpoint_sha256(checkpoint)
        )
        return cls(model, info, replace(options, precision=precision), engine)

    # --- outputs --------------------------------------------------------------------------------

    def settings(self, kind: str) -> str:
        """The settings that define an output of ``kind``, as its ``bicorseg_settings`` tag records them."""
        opts = self.options
        tta = tta_name(opts.tta, self.info.dataset)
        if opts.tta_scales is not None:
            tta += f" tta_scales={','.join(f'{v:g}' for v in opts.tta_scales)}"
        if opts.tta_merge is not None:
            tta += f" tta_merge={opts.tta_merge}"
        text = f"tile={opts.tile} overlap={opts.overlap} tta={tta} engine={self.engine} precision={opts.precision}"
        if opts.rescale != "none":
            text += f" rescale={opts.rescale}"
        if opts.crs is not None:
            text += f" crs={opts.crs}" + (f" pixel_size={opts.pixel_size:g}" if opts.pixel_size else "")
        if self._aoi_sha256 is not None:
            text += f" aoi={Path(opts.aoi).name}:{self._aoi_sha256[:16]}"
        if torch.device(opts.device).type == "cpu":  # a GPU's results do not depend on it
            text += f" threads={opts.threads}"
        return text + (f" probabilities={opts.probabilities}" if kind == "probabilities" else "")

    def base_tags(self) -> dict[str, dict[str, str]]:
        """The tags of each output kind, except the input's name (:func:`output_tags` adds it)."""
        return {
            kind: {
                "bicorseg_version": VERSION,
                "bicorseg_checkpoint": self.info.source,
                "bicorseg_checkpoint_sha256": self.info.sha256 or "",
                "bicorseg_classes": json.dumps(self.info.class_names),
                "bicorseg_settings": self.settings(kind),
                "bicorseg_tta": describe_tta(self.tta),
            }
            for kind in ("class", "probabilities", "color", "confidence")
        }

    # --- inputs ---------------------------------------------------------------------------------

    def inspect(self, path: InputPath) -> InputPlan:
        """:func:`inspect_input` of ``path`` (warnings are issued then), with its outputs' georeferencing."""
        with (
            rasterio.Env(GDAL_CACHEMAX=raster_access.GDAL_CACHE_BYTES),
            raster_access.open_raster(path) as src,
        ):
            plan = inspect_input(src, path, self.info, self.options.rescale)
        return replace(plan, geo=self._georeference(plan))

    def _georeference(self, plan: InputPlan) -> Georeference | None:
        """The georeferencing of an input's outputs: its own, or the options' (module docstring)."""
        opts, geo, path = self.options, plan.geo, plan.path
        if opts.crs is not None and (geo is None or geo.crs is None):
            own = geo or Georeference()
            transform = own.transform
            if transform is None and own.gcps is None:
                if opts.pixel_size is None:
                    raise InputError(
                        f"{path} has no transform: give `pixel_size` (CRS units) with `crs` to place it"
                    )
                size = opts.pixel_size
                transform = (size, 0.0, 0.0, 0.0, -size, plan.shape[0] * size)  # lower-left at (0, 0)
            geo = Georeference(opts.crs, transform, own.gcps, own.block)
        if opts.require_georeference and (geo is None or geo.crs is None or geo.transform is None):
            reason = "is georeferenced by ground control points only (warp it first, e.g. with gdalwarp)"
            if geo is None or geo.crs is None:
                reason = "has no CRS: give `crs` (and `pixel_size` for a plain picture)"
            raise InputError(
                f"{path} {reason}: polygons need a CRS and a transform to be placed and measured"
            )
        return geo

    @contextmanager
    def reading(self, plan: InputPlan) -> Iterator[RasterReader]:
        """The input opened for windowed, normalised reads (GDAL's cache bounded; checked unchanged)."""
        with (
            rasterio.Env(GDAL_CACHEMAX=raster_access.GDAL_CACHE_BYTES),
            raster_access.open_raster(plan.path) as src,
        ):
            if (src.height, src.width) != plan.shape:
                raise InputError(f"{plan.path} changed while it was being predicted")
            yield RasterReader(src, plan, self.info)

    def engine_for(self, shape: tuple[int, int]) -> SlidingWindow:
        opts = self.options
        return SlidingWindow(
            shape[0],
            shape[1],
            self.layout.channels,
            opts.tile,
            opts.overlap,
            opts.batch_size,
            block=opts.block,
            device=opts.device,
        )

    def area_of_interest(self, plan: InputPlan) -> Any:
        """The area of interest on this input's pixel grid (None without ``aoi``), read once per input."""
        if self.options.aoi is None:
            return None
        path = plan.path
        key = str(Path(path).resolve())
        if key not in self._aois:
            geo = plan.geo
            if geo is None or geo.crs is None or geo.transform is None:
                raise InputError(
                    f"{path} has no CRS and transform: an area of interest cannot be placed on it"
                )
            from bicorseg.gis.aoi import AreaOfInterest

            self._aois[key] = AreaOfInterest.read(
                self.options.aoi, geo.crs, rasterio.Affine(*geo.transform), str(path), shape=plan.shape
            )
        return self._aois[key]

    # --- computing ------------------------------------------------------------------------------

    def compute_block(
        self,
        engine: SlidingWindow,
        reader: RasterReader,
        block: Block,
        sink: SinkFn,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Compute one block and hand its encoded strips to ``sink`` (nodata outside the area of interest).

        A pixel where the model's output is not finite (NaN, or an overflow) is nodata, not a class;
        returns how many of the block's valid pixels that made nodata.
        """
        layout, aoi = self.layout, self.area_of_interest(reader.plan)
        if aoi is not None and not aoi.touches(block.y0, block.x0, block.height, block.width):
            for r in range(0, block.height, 256):  # no valid pixel: nodata in every output
                n = min(256, block.height - r)
                values = np.zeros((layout.channels, n, block.width), np.float32)
                sink(block.y0 + r, block.x0, layout.encode(values, np.zeros((n, block.width), bool)))
            if progress is not None:
                progress(engine.tile_count(block))
            return 0
        nonfinite = 0

        def write(y0: int, x0: int, values: np.ndarray, valid: np.ndarray) -> None:
            nonlocal nonfinite
            if aoi is not None:
                valid &= aoi.mask(y0, x0, *valid.shape)
            finite = np.isfinite(values).all(axis=0)
            if not finite.all():
                nonfinite += int(np.count_nonzero(valid & ~finite))
                valid &= finite
            sink(y0, x0, layout.encode(values, valid))

        keep = aoi.touches if aoi is not None else None  # tiles outside are not computed
        with torch_threads(self.options.threads):
            engine.run_block(block, self.probs_fn, reader, write, progress, keep)
        return nonfinite

    def check_inputs(self, paths: Sequence[InputPath], out_dir: Path) -> list[CheckedInput]:
        """Every check before any work: each input inspected (warnings are issued here), its outputs
        checked against the inputs and each other, the area of interest placed on it, its existing
        outputs verified (refused unless ``overwrite``), and the model's logits once if there is
        work. A finished input's style is written again if it went missing."""
        plans = [self.inspect(path) for path in paths]
        pictures = self.options.crs is None  # a picture given a CRS gets GeoTIFFs
        every_kind = replace(self.layout, probabilities="uint8", color=True, confidence=True)
        possible = [every_kind.targets(out_dir, p.stem, pictures and is_picture(p)) for p in paths]
        targets = [{kind: files[kind] for kind in self.layout.kinds} for files in possible]
        check_targets(dict(zip(paths, targets)))
        checked, problems = [], {}
        for plan, outputs, files in zip(plans, targets, possible):
            self.area_of_interest(plan)
            done, bad = existing_outputs(
                outputs, plan.path.name, plan.shape, self.layout, self.info.sha256, self.settings
            )
            problems.update(bad)
            checked.append(CheckedInput(plan, outputs, done and not self.options.overwrite))
            # an optional map of an earlier run would sit beside new maps it does not belong to
            leftovers = (
                [] if checked[-1].finished else [k for k in files if k not in outputs and files[k].exists()]
            )
            for kind in leftovers:
                warnings.warn(
                    f"{files[kind]} is left from an earlier run and does not belong to the new "
                    f"{outputs['class'].name}: delete it, or ask for `{kind}` to replace it",
                    BicorsegWarning,
                    stacklevel=2,
                )
        refuse_existing(problems, self.options.overwrite)
        # after the inputs: a bad input is named without the model
        if not all(item.finished for item in checked) and not self._logits_checked:
            check_finite_logits(self.logits_fn, self.info, self.options)
            self._logits_checked = True
        for item in checked:
            if item.finished and not all(p.exists() for p in style_paths(item.targets["class"])):
                write_style(item.targets["class"], self.layout)
        return checked

    def predict_file(
        self, path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress | None = None
    ) -> FileResult:
        """Predict one file into ``out_dir``, its blocks in sequence; skipped when its outputs exist and
        verify (module docstring)."""
        [item] = self.check_inputs([raster_access.input_path(path)], Path(out_dir))
        if item.finished:
            return FileResult(item.path, item.targets, skipped=True)
        result = self.write_file(item, progress)
        warn_nonfinite(item.path, result.nonfinite)
        return result

    def write_file(self, item: CheckedInput, progress: Progress | None = None) -> FileResult:
        """Compute the blocks of an input checked by :meth:`check_inputs` in sequence into its outputs."""
        plan, targets = item.plan, item.targets
        targets["class"].parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        engine = self.engine_for(plan.shape)
        tags = output_tags(self.base_tags(), plan.path.name, rescale_tag(self.options.rescale, plan))
        with (
            self.reading(plan) as reader,
            writing_maps(targets, self.layout, plan.geo, plan.shape, tags) as sink,
        ):
            if progress is not None:
                progress.start(plan.path.name, engine.total_tiles)
            advance = progress.advance if progress is not None else None
            nonfinite = sum(self.compute_block(engine, reader, b, sink, advance) for b in engine.blocks)
        blocks = len(engine.blocks)
        seconds = time.perf_counter() - start
        return FileResult(
            item.path, targets, units=blocks, computed=blocks, nonfinite=nonfinite, seconds=seconds
        )
