"""Writing prediction outputs: Cloud-Optimized GeoTIFFs and PNGs, their tags and QGIS style, safely.

:class:`MapLayout` says which outputs an input gets (``<stem>.tif`` or, for a plain picture,
``<stem>.png``; ``_prob``, ``_color``, ``_confidence``; listed in ``docs/prediction.md``, Outputs)
and encodes blended probabilities into their arrays: class indices (nodata 255), probabilities as
``round(p * 254)`` (GDAL scale 1/254, nodata 255) or float32 (nodata NaN), confidence bands
(:data:`CONFIDENCE_BANDS`; the entropy divided by ``log(N)``). A class map's QGIS style and GDAL
category names are written beside it (:func:`write_style`).

A GeoTIFF output is tiled with the input's square block size if it is at least 128 (else 128, or
256 for an input not tiled in square blocks), written in windows to a hidden staging GeoTIFF,
converted with GDAL's COG driver (overviews: :data:`OVERVIEW_RESAMPLING`) into the output's
temporary file, read back block by block, and renamed onto the target with the other outputs of the
same input (:class:`bicorseg.atomic.OutputGroup`, the class map last), so nothing appears until
everything is complete.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rasterio._err import CPLE_BaseError  # what rasterio.shutil.copy raises: not a RasterioError
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from bicorseg import raster_access
from bicorseg.atomic import OutputGroup, write_error
from bicorseg.data.labels import class_map_picture, colourise, gdal_colour_map
from bicorseg.defaults import NODATA
from bicorseg.errors import BicorsegWarning, InputError, OutputError, first_line
from bicorseg.inference.raster_io import DEFAULT_BLOCK_SHAPE, Georeference

PROB_SCALE = 254  # uint8 probabilities: round(p * 254); 255 is left for nodata
PROBABILITY_TYPES = ("uint8", "float32")
CONFIDENCE_BANDS = ("max_probability", "normalised_entropy", "tta_disagreement")
# overviews of each Cloud-Optimized GeoTIFF: classes by the most common value, colours by nearest
# sample (a mode per band would mix colours), probabilities and confidence averaged
OVERVIEW_RESAMPLING = {
    "class": "MODE",
    "color": "NEAREST",
    "probabilities": "AVERAGE",
    "confidence": "AVERAGE",
}
MIN_COG_BLOCK = 128  # GDAL's COG driver takes blocks of at least 128 px
STAGE_SUFFIX = ".stage.tif"  # the staging GeoTIFF beside an output's temporary file


def geotiff_profile(geo: Georeference | None, height: int, width: int, **extra: Any) -> dict:
    """A tiled, compressed GeoTIFF profile with ``geo``'s CRS, transform (or GCPs) and block size."""
    block = geo.block if geo is not None else DEFAULT_BLOCK_SHAPE
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
    if geo is not None and geo.crs is not None:
        profile["crs"] = rasterio.crs.CRS.from_user_input(geo.crs)
    if geo is not None and geo.transform is not None:
        profile["transform"] = rasterio.Affine(*geo.transform)
    elif geo is not None and geo.gcps is not None:
        profile["gcps"] = [GroundControlPoint(*g) for g in geo.gcps]
    profile.update(extra)
    profile.setdefault("predictor", 3 if np.dtype(profile["dtype"]).kind == "f" else 2)
    return profile


# --- what is written --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapLayout:
    """The prediction maps of one run: classes always, optional probabilities, colours, confidence.

    ``disagreement``: the confidence output has the third band (test-time augmentation with more
    than one pass); the values handed to :meth:`encode` then carry that fraction as channel N.
    """

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    probabilities: str | None = None
    color: bool = False
    confidence: bool = False
    disagreement: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """Channels of the blended values: the class probabilities, then the disagreement fraction."""
        return self.num_classes + int(self.confidence and self.disagreement)

    @property
    def confidence_bands(self) -> tuple[str, ...]:
        return CONFIDENCE_BANDS if self.disagreement else CONFIDENCE_BANDS[:2]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The outputs of each input, in this order (each optional one is named like its field)."""
        return ("class", *(kind for kind in ("probabilities", "color", "confidence") if getattr(self, kind)))

    @property
    def encoded(self) -> tuple[str, ...]:
        """The kinds :meth:`encode` returns (colours are drawn from the classes when written)."""
        return tuple(kind for kind in self.kinds if kind != "color")

    def targets(self, out_dir: Path, stem: str, picture: bool) -> dict[str, Path]:
        """Kind -> the output of the input ``stem`` in ``out_dir`` (``picture``: its maps are PNGs)."""
        ext = ".png" if picture else ".tif"
        ends = {
            "class": ext,
            "probabilities": "_prob.tif",
            "color": f"_color{ext}",
            "confidence": "_confidence.tif",
        }
        return {kind: out_dir / f"{stem}{ends[kind]}" for kind in self.kinds}

    def bands(self, kind: str) -> tuple[int, str]:
        """Band count and type of an output of ``kind``."""
        return {
            "class": (1, "uint8"),
            "color": (4, "uint8"),
            "probabilities": (self.num_classes, self.probabilities or "uint8"),
            "confidence": (len(self.confidence_bands), "float32"),
        }[kind]

    def nodata(self, kind: str) -> float | None:
        _, dtype = self.bands(kind)
        if kind == "color":
            return None
        return float("nan") if dtype == "float32" else NODATA

    def encode(self, values: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """The output arrays of blended ``values`` (``channels x h x w``) where ``valid`` (``h x w``)."""
        n = self.num_classes
        probs = values[:n]
        classes = probs.argmax(axis=0).astype(np.uint8)
        classes[~valid] = NODATA
        out = {"class": classes}
        if self.probabilities == "float32":
            p = probs.astype(np.float32, copy=True)
            p[:, ~valid] = np.nan
            out["probabilities"] = p
        elif self.probabilities:
            p = np.rint(probs * PROB_SCALE).astype(np.uint8)
            p[:, ~valid] = NODATA
            out["probabilities"] = p
        if self.confidence:
            with np.errstate(divide="ignore", invalid="ignore"):
                entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=0)
            bands = [probs.max(axis=0), entropy / math.log(n) if n > 1 else np.zeros_like(entropy)]
            if self.disagreement:
                bands.append(values[n])
            conf = np.stack(bands).astype(np.float32)
            conf[:, ~valid] = np.nan
            out["confidence"] = conf
        return out


# --- temporary files, COG conversion, commit --------------------------------------------------------


class RasterOutputs:
    """The output files of one input, written in windows to temporary files and renamed on commit
    (module docstring); the class map is renamed last, so its presence marks a finished input."""

    def __init__(self, targets: Mapping[str, Path]) -> None:
        self.targets = dict(targets)
        self.group = OutputGroup(self.targets, last="class" if "class" in self.targets else None)
        self.datasets: dict[str, Any] = {}
        self.cogs: dict[str, tuple[Path, str, int]] = {}  # kind -> (staging file, resampling, block)

    def open_geotiff(self, kind: str, profile: dict, cog: str | None = None) -> Any:
        """A dataset writing the output ``kind``; ``cog``: convert it to a COG with these overviews."""
        path = self.group.temp(kind)
        if cog is not None:
            path = self.group.side_file(kind, STAGE_SUFFIX)
            self.cogs[kind] = (path, cog, max(MIN_COG_BLOCK, int(profile["blockxsize"])))
        try:
            dst = rasterio.open(path, "w", **profile)
        except (OSError, RasterioError) as error:
            raise write_error(self.targets[kind], error) from error
        self.datasets[kind] = dst
        return dst

    def commit(self) -> None:
        """Close, convert the COGs, check that every GeoTIFF reads back whole, then rename into place.

        GDAL reports a failed block write (a full disk) only as a logged error when the file is
        flushed, so a file is read back block by block before it may take its final name.
        """
        for kind, dst in self.datasets.items():
            try:
                dst.close()
                if kind in self.cogs:  # GDAL's COG driver, with overviews by the kind's resampling
                    stage, resampling, block = self.cogs[kind]
                    rasterio.shutil.copy(stage, self.group.temp(kind), driver="COG", COMPRESS="DEFLATE",
                                         PREDICTOR="YES", BLOCKSIZE=block, OVERVIEWS="AUTO",
                                         OVERVIEW_RESAMPLING=resampling, BIGTIFF="IF_SAFER")  # fmt: skip
                    stage.unlink()
            except (OSError, RasterioError, CPLE_BaseError) as error:
                raise write_error(self.targets[kind], error) from error

        def verify(kind: str, temp: Path) -> None:
            if kind not in self.datasets:
                return
            try:
                with rasterio.open(temp) as written:
                    for _, window in written.block_windows(1):
                        written.read(window=window)
            except (OSError, RasterioError) as error:
                raise write_error(self.targets[kind], error) from error

        self.group.commit(verify)

    def abort(self) -> None:
        for dst in self.datasets.values():
            with suppress(Exception):  # closing a half-written file may fail; it is deleted anyway
                dst.close()
        self.group.abort()


# --- the maps of one input ------------------------------------------------------------------------


@contextmanager
def writing_maps(
    targets: dict[str, Path],
    layout: MapLayout,
    geo: Georeference | None,
    shape: tuple[int, int],
    tags: dict[str, dict[str, str]],
    origin: tuple[int, int] | None = None,
) -> Iterator[Callable[[int, int, Mapping[str, np.ndarray]], None]]:
    """A sink ``write(y0, x0, arrays)`` of one input's maps: encoded arrays (:meth:`MapLayout.encode`)
    whose top-left output pixel is ``(y0, x0)``; the maps appear together (with their style) when
    the block ends without error, else nothing of them does.

    ``tags`` maps each kind to the tags of its file (PNG text chunks for pictures). Pictures keep
    their class map in memory (they are read whole anyway) and are saved as PNG at the end.
    ``origin``: the maps are a part of larger maps, whose pixel ``origin`` is their top-left one
    (a unit's parts, :mod:`.units`): plain GeoTIFFs, quickly compressed, not converted to COGs.
    """
    picture, (height, width) = targets["class"].suffix == ".png", shape
    class_map = np.full(shape, NODATA, np.uint8) if picture else None
    with rasterio.Env(GDAL_CACHEMAX=raster_access.GDAL_CACHE_BYTES), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pictures' and parts' have none
        outputs, datasets = RasterOutputs(targets), {}
        try:
            for kind in targets:
                if picture and kind in ("class", "color"):
                    continue
                count, dtype = layout.bands(kind)
                extra: dict[str, Any] = {"count": count, "dtype": dtype, "nodata": layout.nodata(kind)}
                if kind == "color":
                    extra.update(photometric="RGB", alpha="YES")
                # a staging file or a part, read once: fast compression is enough
                profile = geotiff_profile(None if picture else geo, height, width, zlevel=1, **extra)
                dst = outputs.open_geotiff(
                    kind, profile, OVERVIEW_RESAMPLING[kind] if origin is None else None
                )
                if kind == "class":
                    dst.write_colormap(1, gdal_colour_map(layout.palette))
                if kind == "probabilities" and dtype == "uint8":
                    dst.scales = [1.0 / PROB_SCALE] * layout.num_classes
                names = {"class": ("class",), "probabilities": layout.class_names,
                         "confidence": layout.confidence_bands}  # fmt: skip
                for i, name in enumerate(names.get(kind, ()), start=1):
                    dst.set_band_description(i, name)
                dst.update_tags(**tags[kind])
                datasets[kind] = dst

            def write(y0: int, x0: int, arrays: Mapping[str, np.ndarray]) -> None:
                classes = arrays["class"]
                h, w = classes.shape
                if origin is not None:
                    y0, x0 = y0 - origin[0], x0 - origin[1]
                window = Window(x0, y0, w, h)
                try:
                    if class_map is not None:
                        class_map[y0 : y0 + h, x0 : x0 + w] = classes
                    else:
                        datasets["class"].write(classes, 1, window=window)
                        if "color" in datasets:
                            datasets["color"].write(
                                colourise(classes, layout.palette, alpha=True), window=window
                            )
                    for kind in ("probabilities", "confidence"):
                        if kind in datasets:
                            datasets[kind].write(arrays[kind], window=window)
                except RasterioError as error:
                    raise write_error(targets["class"], error) from error

            yield write
            if class_map is not None:
                images = {"class": class_map_picture(class_map, layout.palette)}
                if "color" in targets:
                    images["color"] = Image.fromarray(
                        np.moveaxis(colourise(class_map, layout.palette, alpha=True), 0, -1)
                    )
                for kind, image in images.items():
                    text = PngInfo()
                    for key, value in tags[kind].items():
                        text.add_itxt(key, value)
                    try:
                        image.save(outputs.group.temp(kind), format="PNG", pnginfo=text)
                    except OSError as error:
                        raise write_error(targets[kind], error) from error
            outputs.commit()
        except BaseException:
            outputs.abort()
            raise
    if origin is None:
        write_style(targets["class"], layout)


def style_paths(class_target: Path) -> list[Path]:
    """The files that name and colour the classes beside a GeoTIFF class map (none for a PNG)."""
    if class_target.suffix != ".tif":
        return []
    from bicorseg.gis.categories import pam_path
    from bicorseg.gis.qml import qml_path

    return [qml_path(class_target), pam_path(class_target)]


def write_style(class_target: Path, layout: MapLayout) -> list[Path]:
    """Beside a GeoTIFF class map: ``<stem>.qml`` (QGIS applies it on opening) and ``<stem>.tif.aux.xml``
    (category names and a raster attribute table, which every GDAL-based reader shows); none for a PNG."""
    from bicorseg.gis.categories import write_categories
    from bicorseg.gis.qml import write_qml

    paths = style_paths(class_target)
    for path, write in zip(paths, (write_qml, write_categories)):
        try:
            write(class_target, layout.class_names, layout.palette)
        except OSError as error:
            raise write_error(path, error) from error
    return paths


def output_tags(
    base: dict[str, dict[str, str]], input_name: str, rescale: str | None = None
) -> dict[str, dict[str, str]]:
    """The tags of each output of the input ``input_name`` (one order for every writer: same bytes),
    with the map of its values (:meth:`.predictor.Predictor.rescale_tag`) when it has one."""
    extra = {"bicorseg_input": input_name} | ({} if rescale is None else {"bicorseg_rescale": rescale})
    return {kind: {**tags, **extra} for kind, tags in base.items()}


# --- checking existing outputs and targets --------------------------------------------------------


def read_written(path: Path) -> tuple[dict[str, str], tuple[int, int], tuple[int, str]]:
    """The tags, ``(height, width)`` and ``(band count, type)`` of a GeoTIFF found in an output folder,
    read to its last block (a truncated file fails); opened as an input (no network)."""
    with raster_access.open_raster(path) as out:
        *_, (_, last) = out.block_windows(1)
        out.read(window=last)
        return out.tags(), out.shape, (out.count, out.dtypes[0])


def verify_output(
    kind: str,
    target: Path,
    input_name: str,
    shape: tuple[int, int],
    layout: MapLayout,
    sha256: str | None,
    settings: str,
) -> str | None:
    """Why an existing output ``target`` of the input ``input_name`` is not this run's result (None: it is)."""
    try:
        if target.suffix.lower() == ".png":
            with Image.open(target) as image:
                image.load()
                tags, size, found = dict(getattr(image, "text", {})), image.size, f"mode {image.mode}"
            expected = "mode P" if kind == "class" else "mode RGBA"
        else:
            tags, (height, width), (count, dtype) = read_written(target)
            size, found = (width, height), f"{count} band(s) of {dtype}"
            expected = "{} band(s) of {}".format(*layout.bands(kind))
    except Exception as error:  # whatever the reader raises, the file cannot be used
        return f"unreadable ({first_line(error.__cause__ or error)})"
    if size != (shape[1], shape[0]):
        return f"{size[0]} x {size[1]} px, not the input's {shape[1]} x {shape[0]}"
    if found != expected:
        return f"{found}, not {expected}"
    if "bicorseg_settings" not in tags:
        return "not written by bicorseg predict"
    if tags.get("bicorseg_input") != input_name:
        return f"made from another input ({tags.get('bicorseg_input')})"
    if not sha256 or tags.get("bicorseg_checkpoint_sha256") != sha256:
        return "made by another checkpoint"
    if tags["bicorseg_settings"] != settings:
        return f"settings differ ({tags['bicorseg_settings']}; now {settings})"
    return None


def existing_outputs(
    targets: Mapping[str, Path],
    input_name: str,
    shape: tuple[int, int],
    layout: MapLayout,
    sha256: str | None,
    settings: Callable[[str], str],
) -> tuple[bool, dict[Path, str]]:
    """Whether every output (``targets``) of an input exists and is this run's result (``settings``:
    of each kind), and why each existing one is not (:func:`verify_output`)."""
    complete, problems = True, {}
    for kind, target in targets.items():
        if not target.exists():
            complete = False
        elif reason := verify_output(kind, target, input_name, shape, layout, sha256, settings(kind)):
            problems[target] = reason
    return complete and not problems, problems


def check_targets(jobs: Mapping[Any, Mapping[str, Path]]) -> None:
    """Refuse an output that is an input (same path, through a link, or a hard link of it) or a file
    an input reads (a VRT's sources, a STAC item's assets, sidecar files:
    :func:`bicorseg.raster_access.input_files`), and an output that two inputs would share (names
    compared without case, as some file systems do)."""
    inputs: dict[Any, tuple[Path, Path]] = {}  # resolved path or inode -> (file, the input reading it)
    for path in jobs:
        for file in (path, *raster_access.input_files(path)):
            inputs.setdefault(file.resolve(), (file, path))
            with suppress(OSError):
                stat = file.stat()
                inputs.setdefault((stat.st_dev, stat.st_ino), (file, path))
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
                file, owner = same
                what = f"the input {file}" if file is owner else f"{file}, which the input {owner} reads"
                raise InputError(
                    f"the output {target} of {path} would overwrite {what}: choose another output folder"
                )
            first, first_target = owners.setdefault(
                (resolved.parent, resolved.name.casefold()), (path, target)
            )
            if first != path:
                case = (
                    ""
                    if first_target.name == target.name
                    else f" (and {target.name}, the same name without case)"
                )
                raise InputError(
                    f"{first} and {path} would both write {first_target}{case}: rename one or predict them "
                    "into different folders"
                )


def refuse_existing(problems: Mapping[Path, str], overwrite: bool) -> None:
    """Existing outputs that are not this run's result: replaced with ``overwrite`` (one warning each),
    refused without it (one line naming the first and why)."""
    if overwrite:
        for target, reason in problems.items():
            warnings.warn(f"{target}: {reason}; recomputing it", BicorsegWarning, stacklevel=3)
        return
    if problems:
        target, reason = next(iter(problems.items()))
        more = f" ({len(problems) - 1} more existing output(s) like it)" if len(problems) > 1 else ""
        raise OutputError(f"{target} exists: {reason}; use `overwrite` to recompute it{more}")
