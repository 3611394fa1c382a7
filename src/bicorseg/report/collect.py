"""What a report shows, read from the files: bounded-size pictures, per-class areas, metrics.

Every raster is read decimated (``rasterio`` ``out_shape``, nearest neighbour), so the pictures have
at most ``max_size`` pixels on their long side whatever the raster's size; the per-class areas are
counted over every pixel of the class raster, window by window (bounded memory). A scene whose
labels are given also gets its truth and error views and the confusion per class
(:mod:`.truth`); a class raster with a CRS, its place: coordinates and a scale bar (:mod:`.place`).

Areas: with the optional extra ``vector`` installed, :func:`bicorseg.gis.areas.class_areas` measures
them for any CRS (in the plane or on the ellipsoid, as ``bicorseg areas`` does). Without it, a
raster in a projected CRS gets pixel count x pixel size (in the plane; the projection's areal
distortion is not checked, and the report says so); a raster without a projected CRS, or in one
whose units are unknown, gets pixel counts and shares only.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError

from bicorseg import raster_access
from bicorseg.atomic import is_plain_name
from bicorseg.data.labels import colour_table
from bicorseg.defaults import IMAGE_SUFFIXES, default_palette
from bicorseg.errors import ConfigError, InputError
from bicorseg.gis.source import ClassColours, ClassRaster
from bicorseg.inference.heatmaps import (
    HEATMAP_COLORMAP,
    HEATMAP_PNG,
    HEATMAP_RASTER,
    class_slug,
    display_shape,
    display_stretch,
)
from bicorseg.report.place import Place, place_of
from bicorseg.report.truth import TruthView, read_truth
from bicorseg.text_files import read_json_object

MAX_SIZE = 2048  # long side of the image and the prediction in the report, in pixels
HEATMAP_SIZE = 512  # long side of each heatmap picture
METRICS_LIMIT = 16 * 2**20  # bytes: a larger metrics.json is not one bicorseg wrote


@dataclass
class ReportItem:
    """One scene of a report: its class raster and, when known, the image and the heatmaps."""

    prediction: Path
    image: Path | None = None
    heatmaps: list[Path] = field(default_factory=list)  # *_heatmaps_layer{l}.tif or *_layer{l}_{class}.png
    class_names: Sequence[str] | None = None  # None: from the class raster's tags (or class_table)
    palette: Sequence[Sequence[int]] | None = None  # None: the class raster's colour table
    name: str | None = None
    labels: Path | None = None  # a label raster of the prediction's size and grid: truth and error views


@dataclass
class ClassRow:
    class_id: int
    name: str
    colour: tuple[int, int, int]
    pixels: int
    percent: float
    hectares: float | None


@dataclass
class Areas:
    rows: list[ClassRow]
    method: str  # how areas were measured, shown under the table
    total_pixels: int
    total_hectares: float | None


@dataclass
class SceneContent:
    name: str
    image: np.ndarray | None  # the pictures: H x W x 4 uint8 (RGBA)
    prediction: np.ndarray
    areas: Areas
    heatmaps: dict[int, dict[int, np.ndarray]]  # layer -> class id -> picture
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # "prediction", "image", "labels"
    place: Place | None = None  # with a CRS: coordinates and scale
    truth: TruthView | None = None  # with labels


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.dstack([rgb, np.where(alpha, 255, 0).astype(np.uint8)]))


def _class_table(raster: ClassRaster, item: ReportItem) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours of the classes (the item's, else the raster's; else ids and defaults)."""
    names = list(item.class_names) if item.class_names is not None else raster.names
    if names is None:  # no names anywhere: classes 0 .. the largest value present
        names = [raster.name(i) for i in range(len(_pixel_counts(raster, 1)))]
    if item.palette is not None:
        colours = [tuple(int(v) for v in c[:3]) for c in item.palette]
    else:
        colours = [raster.palette.get(i) for i in range(len(names))]
    fallback = default_palette(len(names))
    table = [c if c is not None else fallback[i] for i, c in enumerate(colours)]
    table += fallback[len(table) :]
    return names, table


def _read_prediction(
    raster: ClassRaster, colours: list[tuple[int, int, int]], max_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The prediction's picture, and the decimated class values and their validity it shows."""
    src = raster.src
    shape = display_shape(src.height, src.width, max_size)
    with raster_access.reading(raster.path):
        data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        valid = src.read_masks(1, out_shape=shape, resampling=Resampling.nearest) > 0
    if raster.extra_nodata is not None:
        valid &= data != raster.extra_nodata
    table = colour_table(colours[:256])
    known = valid & (data >= 0) & (data < len(colours))
    rgb = table[np.where(known, data, 0).astype(np.int64)]
    return _rgba(rgb, known), data, valid


def _pixel_counts(raster: ClassRaster, size: int) -> np.ndarray:
    counts = np.zeros(size, np.int64)
    for window in raster.windows():
        data, valid = raster.read(window)
        values = data[valid].astype(np.int64)
        if values.size:
            counts = np.pad(counts, (0, max(0, int(values.max()) + 1 - len(counts))))
            counts += np.bincount(values, minlength=len(counts))
    return counts


def _metres_per_unit(crs: CRS) -> float | None:
    """Metres per unit of a projected CRS; None when its units are unknown."""
    try:
        name, metres = crs.linear_units_factor
    except CRSError:
        return None
    return float(metres) if name != "unknown" and math.isfinite(metres) and metres > 0 else None


def _areas(
    raster: ClassRaster,
    names: list[str],
    colours: list[tuple[int, int, int]],
    class_table: ClassColours | None,
) -> Areas:
    """Per-class pixels, shares and hectares (see the module docstring for the method)."""
    src = raster.src
    hectares: np.ndarray | None = None
    method = "pixel counts only: the raster has no CRS, so its pixels have no size in metres"
    counts: np.ndarray | None = None
    if src.crs is not None:
        try:
            from bicorseg.gis.areas import AreaOptions, class_areas
        except ConfigError:  # the optional extra is not installed
            class_areas = None
        if class_areas is not None:
            report = class_areas(raster.path, AreaOptions(class_table=class_table))
            present = [row for row in report.classes if row.pixels]
            counts = np.zeros(max([len(names), *(row.class_id + 1 for row in present)]), np.int64)
            hectares = np.zeros(len(counts), np.float64)
            for row in present:
                counts[row.class_id], hectares[row.class_id] = row.pixels, row.area_ha
            method = f"areas {report.area_method}"
        elif not src.crs.is_projected:
            method = (
                f"pixel counts only: areas in {src.crs.to_string()} are measured on the ellipsoid, which "
                'needs the optional extra (pip install "bicorseg[vector]")'
            )
        elif (metres := _metres_per_unit(src.crs)) is None:
            method = (
                f"pixel counts only: the units of {src.crs.to_string()} are unknown, so its pixels have no "
                "size in metres"
            )
        else:
            counts = _pixel_counts(raster, len(names))
            t = src.transform
            pixel_m2 = abs(t.a * t.e - t.b * t.d) * metres**2
            hectares = counts * pixel_m2 / 1e4
            method = (
                f"areas in the plane of {src.crs.to_string()} from the pixel size ({pixel_m2:g} m² per pixel); "
                'the projection\'s areal distortion is not checked (pip install "bicorseg[vector]" to measure it)'
            )
    if counts is None:
        counts = _pixel_counts(raster, len(names))
    if len(counts) > len(names):
        bad = int(np.nonzero(counts[len(names) :])[0][0]) + len(names)
        raise InputError(f"{raster.path}: pixel value {bad} is not one of the {len(names)} classes")
    total = int(counts.sum())
    rows = [
        ClassRow(
            i,
            names[i],
            colours[i],
            int(counts[i]),
            100.0 * float(counts[i]) / total if total else 0.0,
            None if hectares is None else float(hectares[i]),
        )
        for i in range(len(names))
    ]
    total_ha = None if hectares is None else float(hectares.sum())
    return Areas(rows, method, total, total_ha)


def _heatmap_picture(values: np.ndarray) -> np.ndarray:
    """A [0, 1] map (NaN = no data) in the perceptual colour map, transparent where NaN."""
    from matplotlib import colormaps

    finite = np.isfinite(values)
    rgba = colormaps[HEATMAP_COLORMAP](np.clip(np.nan_to_num(values), 0.0, 1.0), bytes=True)
    rgba[..., 3] = np.where(finite, 255, 0)
    return np.ascontiguousarray(rgba)


def _read_heatmaps(paths: Sequence[Path], names: list[str]) -> dict[int, dict[int, np.ndarray]]:
    slugs = {class_slug(n): i for i, n in enumerate(names)}
    layers: dict[int, dict[int, np.ndarray]] = {}
    for path in paths:
        raster_match, png_match = HEATMAP_RASTER.match(path.name), HEATMAP_PNG.match(path.name)
        if raster_match is None and png_match is None:
            raise InputError(
                f"{path}: not a heatmap file (<stem>_heatmaps_layer<L>.tif or <stem>_layer<L>_<class>.png)"
            )
        layer = int((raster_match or png_match).group("layer"))
        with raster_access.open_raster(path) as src:
            shape = display_shape(src.height, src.width, HEATMAP_SIZE)
            if raster_match is not None:
                if src.count != len(names):
                    raise InputError(f"{path} has {src.count} bands: expected one per class ({len(names)})")
                data = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
                data = data.astype(np.float32)
                classes = dict(enumerate(data))
            else:
                cls = slugs.get(png_match.group("cls"))
                if cls is None:
                    raise InputError(f"{path}: {png_match.group('cls')!r} is not one of the classes")
                grey = src.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.float32)
                classes = {cls: grey / 255.0}
        for cls, values in classes.items():
            layers.setdefault(layer, {})[cls] = _heatmap_picture(values)
    return dict(sorted(layers.items()))


def collect(
    item: ReportItem, max_size: int = MAX_SIZE, class_table: ClassColours | None = None
) -> SceneContent:
    """Read everything the report shows for one scene (pictures bounded by ``max_size``)."""
    if max_size < 16:
        raise ConfigError(f"must be at least 16 pixels, got {max_size}", key="max_size")
    notes: list[str] = []
    with ClassRaster.open(item.prediction, class_table) as raster:
        names, colours = _class_table(raster, item)
        prediction, predicted, valid = _read_prediction(raster, colours, max_size)
        areas = _areas(raster, names, colours, class_table)
        shape = (raster.src.height, raster.src.width)
        place = place_of(raster.src)
        truth = None
        if item.labels is not None:
            truth = read_truth(raster, item.labels, colours[: len(names)], predicted, valid, class_table)
    image = None
    if item.image is not None:
        with raster_access.open_raster(raster_access.input_path(item.image)) as src:
            if (src.height, src.width) != shape:
                raise InputError(
                    f"{item.image} is {src.height} x {src.width} pixels but its prediction "
                    f"{item.prediction} is {shape[0]} x {shape[1]}"
                )
            bands = [1, 2, 3] if src.count >= 3 else [1]
            shown = prediction.shape[:2]
            with raster_access.reading(item.image):
                data = src.read(
                    bands,
                    out_shape=(len(bands), *shown),
                    resampling=Resampling.nearest,
                    out_dtype="float32",
                )
                valid = src.dataset_mask(out_shape=shown, resampling=Resampling.nearest) > 0
            rgb = display_stretch(data, valid & np.isfinite(data).all(axis=0))
        rgb8 = np.round(np.atleast_3d(rgb) * 255).astype(np.uint8)
        if rgb8.shape[-1] == 1:
            rgb8 = np.repeat(rgb8, 3, axis=-1)
        image = _rgba(rgb8, np.ones(rgb8.shape[:2], bool))
    else:
        notes.append("the input image was not found: the prediction is shown alone")
    heatmaps = _read_heatmaps(item.heatmaps, names)
    if shape != prediction.shape[:2]:
        notes.append(
            f"pictures shown at {prediction.shape[1]} x {prediction.shape[0]} pixels "
            f"(the rasters have {shape[1]} x {shape[0]}); areas are counted on every pixel"
        )
    name = item.name or item.prediction.name
    files = {"prediction": item.prediction, "image": item.image, "labels": item.labels}
    found = {key: path for key, path in files.items() if path is not None}
    return SceneContent(name, image, prediction, areas, heatmaps, notes, found, place, truth)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A metrics report as ``bicorseg evaluate --output`` and the demo write it (checked, bounded)."""
    data = read_json_object(path, "metrics report", InputError, METRICS_LIMIT)
    if not isinstance(data.get("per_class"), dict):
        raise InputError(f"{path} is not a metrics report (no per_class table)")
    return data


def _tags(path: Path) -> dict[str, str]:
    try:
        with raster_access.open_raster(path) as src:  # any file of the folder: no network
            return src.tags() if src.count == 1 else {}
    except (RasterioError, InputError):
        return {}


def find_labels(labels: Path, input_name: str, scenes: int) -> Path | None:
    """The label raster of the scene of input ``input_name``: ``labels`` itself when it is a file (of
    that stem, or for the only scene), else the image file of that stem in the folder ``labels``."""
    stem = Path(input_name).stem
    if labels.is_file():
        return labels if scenes == 1 or labels.stem == stem else None
    found = sorted(p for p in labels.glob(f"{glob.escape(stem)}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(found) > 1:  # which one is the truth is the user's to say
        raise InputError(
            f"labels {labels}: several files for the input {input_name}: {', '.join(p.name for p in found)}"
        )
    return found[0] if found else None


def find_items(
    folder: str | os.PathLike,
    images: Sequence[str | os.PathLike] = (),
    labels: str | os.PathLike | None = None,
) -> list[ReportItem]:
    """The scenes of an output folder of ``bicorseg predict``, ``heatmaps`` or ``demo``.

    A scene is a class raster written by ``bicorseg predict`` (a single-band GeoTIFF, or the paletted
    PNG of a plain picture, with the tag ``bicorseg_input``, in ``folder`` or its sub-folder
    ``predictions``); its image is the file of
    that name in ``images`` (files or folders) or in ``folder`` (a tag that is not a plain file name
    names no image: a page never shows a file from outside these folders); its heatmaps are
    ``<image stem>_heatmaps_layer<L>.tif`` (or the per-class PNGs) in ``folder`` or ``folder/heatmaps``;
    its labels (with ``labels``, a file or a folder) are found by :func:`find_labels`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    label_place = None if labels is None else Path(labels)
    if label_place is not None and not label_place.exists():
        raise InputError(f"labels {label_place} not found")
    search = [Path(p) for p in images] + [folder]
    items: list[ReportItem] = []
    sources: list[str] = []  # the input name of each
    maps = [p for p in folder.iterdir() if p.suffix in (".tif", ".png")]  # predict's GeoTIFFs and PNG maps
    for path in sorted(maps):
        tags = _tags(path)
        source = tags.get("bicorseg_input")
        if source is None or "bicorseg_layer" in tags:
            continue
        sources.append(source)
        if not is_plain_name(source):  # the tag is anyone's to edit: it may only name a file in a folder
            items.append(ReportItem(path))
            continue
        image = None
        for place in search:
            candidate = place if place.is_file() and place.name == source else place / source
            if candidate.is_file() and candidate.resolve() != path.resolve():
                image = candidate
                break
        stem = Path(source).stem
        heatmaps = sorted(
            p
            for where in (folder, folder / "heatmaps")
            for p in where.glob(f"{glob.escape(stem)}_*")
            if (match := HEATMAP_RASTER.match(p.name) or HEATMAP_PNG.match(p.name)) and match["stem"] == stem
        )
        items.append(ReportItem(path, image, heatmaps))
    if not items:
        raise InputError(
            f"{folder}: no class raster written by bicorseg predict (single-band GeoTIFF or PNG with bicorseg tags)"
        )
    for item, source in zip(items, sources):
        found = None if label_place is None else find_labels(label_place, source, len(items))
        own = {f.resolve() for f in (item.prediction, item.image) if f is not None}
        item.labels = None if found is None or found.resolve() in own else found  # never its own files
    if label_place is not None and not any(item.labels for item in items):
        raise InputError(f"labels {label_place}: none of them is named like an input of {folder}")
    return items
