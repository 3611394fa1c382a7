"""Vector layers of a GIS training source: label polygons, the labelled area, the validation area.

Layers are read by :mod:`bicorseg.gis.layers` (any format GDAL reads, CRS required, no network,
polygons streamed, invalid ones repaired or refused); every geometry is reprojected to the CRS of
each raster. A pixel is covered when its centre lies inside.

**Label polygons** (:class:`VectorLabels`) are read once, as a stream of batches, and written per
raster CRS into a GeoPackage with its R-tree (class, priority and area per polygon) in a scratch
folder (deleted when the source is closed or the process ends; one left by a killed process is
deleted by the next run). A window is rasterised from the polygons its bounding box touches, so
neither the memory nor the work of a window grows with the layer; SQLite builds the index on disk
(a FlatGeobuf's packed index reads faster but is built in memory). Features without a class code
are skipped and counted.

**Overlaps**: the higher ``priority_field`` value wins, then the smaller polygon, then the later
feature of the file; pixels covered by polygons of different classes are counted for the summary.

**Area layers** (:func:`read_areas`) are small: held in memory per raster as an
:class:`~bicorseg.gis.aoi.AreaOfInterest`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyogrio  # noqa: E402
import shapely  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402
from rasterio.features import rasterize  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from bicorseg import raster_access  # noqa: E402
from bicorseg.atomic import remove_stale_temps, temp_name  # noqa: E402
from bicorseg.data.geo.classes import GeoClasses, normalise_code  # noqa: E402
from bicorseg.data.geo.rasters import GeoRaster, pixel_polygon, window_transform  # noqa: E402
from bicorseg.errors import ConfigError, InputError, first_line  # noqa: E402
from bicorseg.gis.aoi import AreaOfInterest  # noqa: E402
from bicorseg.gis.layers import LayerRef, PolygonStream, batches, layer_info, read_layer, reproject  # noqa: E402
from bicorseg.gis.layers import transformer as layer_transformer  # noqa: E402

SCRATCH_NAME = "bicorseg-labels"


def check_field(ref: LayerRef, info: dict[str, Any], name: str, key: str) -> None:
    fields = [str(f) for f in info["fields"]]
    if name not in fields:
        raise ConfigError(f"{ref} has no field {name!r} (fields: {', '.join(fields) or 'none'})", key=key)


def transformers(
    ref: LayerRef, info: dict[str, Any], rasters: Sequence[GeoRaster]
) -> dict[str, Transformer | None]:
    """A transformer from the layer's CRS to each distinct raster CRS (None where they are equal)."""
    distinct = {raster.crs: raster for raster in rasters}.values()
    return {r.crs: layer_transformer(ref, info, CRS.from_wkt(r.crs), r.name) for r in distinct}


def layer_codes(ref: LayerRef, field: str, where: str | None) -> Counter[Any]:
    """How many features hold each code of ``field`` (None: no code), streamed without geometries."""
    codes: Counter[Any] = Counter()
    for _, batch in batches(ref, [field], where, geometry=False):
        codes.update(normalise_code(v) for v in batch.column(field).to_pylist())
    return codes


class Scratch:
    """A private folder in the system's temporary folder, deleted by :meth:`close`, when garbage
    collected or at the end of the process that made it (never by its data-loading workers)."""

    def __init__(self) -> None:
        base = Path(tempfile.gettempdir())
        remove_stale_temps(base, [SCRATCH_NAME])  # left by a killed process
        while True:
            path = base / temp_name(base / SCRATCH_NAME)
            try:
                path.mkdir(mode=0o700)
                break
            except FileExistsError:
                continue
        self.path = path
        self._finalizer = weakref.finalize(self, _remove_folder, path, os.getpid())

    def close(self) -> None:
        self._finalizer()


def _remove_folder(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker inherits the finalizer: the folder is not its own
        shutil.rmtree(path, ignore_errors=True)


class VectorLabels:
    """Label polygons of a layer, indexed per raster CRS for fast windowed rasterisation.

    Args:
        ref: the layer.
        rasters: the rasters the labels are placed on.
        classes: the classes and the codes that mean them.
        label_field: the attribute holding each polygon's class name or code.
        where: an attribute filter (an OGR SQL ``WHERE`` clause), or None for all features.
        priority_field: a numeric attribute; polygons with higher values win overlaps.
        strict: refuse invalid polygons instead of repairing them.
        folder: where the indexed files are written.
    """

    def __init__(
        self,
        ref: LayerRef,
        rasters: Sequence[GeoRaster],
        classes: GeoClasses,
        label_field: str,
        where: str | None,
        priority_field: str | None,
        strict: bool,
        folder: Path,
    ) -> None:
        self.ref, self.classes = ref, classes
        info = layer_info(ref)
        self.crs_name = CRS.from_user_input(info["crs"]).name
        self.layer_bounds = tuple(float(v) for v in info["total_bounds"] or (np.nan,) * 4)
        check_field(ref, info, label_field, "data.label_field")
        if priority_field is not None:
            check_field(ref, info, priority_field, "data.priority_field")
        moves = transformers(ref, info, rasters)
        self.files: dict[str, Path] = {}
        self.counts: Counter[str] = Counter()
        self.used = 0  # the features placed on the rasters of the CRS that takes the most
        columns = [label_field] + ([priority_field] if priority_field else [])
        for number, (crs, transformer) in enumerate(moves.items()):
            stream = PolygonStream(ref, columns, where, strict)
            target = folder / f"labels-{number}.gpkg"
            cover = shapely.union_all([r.footprint for r in rasters if r.crs == crs])
            used = self._write(stream, transformer, cover, label_field, priority_field, target, crs)
            if number == 0:
                self.counts.update(stream.counts)
            self.used = max(self.used, used)
            self.files[crs] = target
        if not self.counts["features"]:
            raise InputError(f"{ref.key}: {ref} holds no polygon" + (f" where {where}" if where else ""))
        if not self.used:
            extents = "; ".join(f"{r.name}: {_extent(r.bounds)}" for r in rasters)
            raise InputError(
                f"{ref.key}: none of the {self.counts['features']} features of {ref} overlaps a raster: "
                f"the layer covers {_extent(self.layer_bounds)} ({self.crs_name}); the rasters cover {extents}"
            )

    def _write(
        self,
        stream: PolygonStream,
        transformer: Transformer | None,
        cover: shapely.Geometry,
        label_field: str,
        priority_field: str | None,
        target: Path,
        crs: str,
    ) -> int:
        schema = pa.schema(
            [
                ("geometry", pa.binary()),
                ("cls", pa.uint8()),
                ("priority", pa.float64()),
                ("area", pa.float64()),
                ("source_fid", pa.int64()),
            ]
        )
        shapely.prepare(cover)
        used = 0
        unknown: Counter[Any] = Counter()
        failure: list[BaseException] = []

        def labelled() -> Iterator[pa.RecordBatch]:
            nonlocal used
            try:
                for fids, geoms, attributes in stream:
                    codes = np.array([normalise_code(c) for c in attributes[label_field]], dtype=object)
                    index = np.array([self.classes.index(c) for c in codes], dtype=object)
                    no_code = codes == None  # noqa: E711
                    stream.counts["no class"] += int(no_code.sum())
                    bad = (index == None) & ~no_code  # noqa: E711
                    unknown.update(codes[bad])
                    keep = ~no_code & ~bad
                    if not keep.any():
                        continue
                    geoms = reproject(geoms[keep], transformer, f"{self.ref.key}: {self.ref}")
                    inside = shapely.intersects(cover, geoms)
                    stream.counts["outside"] += int((~inside).sum())
                    if not inside.any():
                        continue
                    geoms = geoms[inside]
                    classes = index[keep][inside].astype(np.uint8)
                    priority = (
                        np.zeros(len(geoms))
                        if priority_field is None
                        else _numbers(attributes[priority_field][keep][inside], self.ref, priority_field)
                    )
                    area = shapely.area(geoms)
                    # one record per polygon part: one geometry type per layer
                    parts, which = shapely.get_parts(geoms, return_index=True)
                    used += len(geoms)
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(shapely.to_wkb(parts)),
                            pa.array(classes[which]),
                            pa.array(priority[which]),
                            pa.array(area[which]),
                            pa.array(np.asarray(fids[keep][inside], dtype=np.int64)[which]),
                        ],
                        schema=schema,
                    )
            except BaseException as error:  # GDAL's stream reader would replace it by its own
                failure.append(error)
                raise

        reader = pa.RecordBatchReader.from_batches(schema, labelled())
        with raster_access.vector_environment(allow_remote=False):
            try:
                pyogrio.write_arrow(
                    reader,
                    target,
                    layer="labels",
                    driver="GPKG",
                    geometry_name="geometry",
                    geometry_type="Polygon",
                    crs=crs,
                )
            except Exception as error:
                if failure:
                    raise failure[0] from None
                raise InputError(f"{self.ref.key}: cannot index {self.ref}: {first_line(error)}") from None
        self.classes.check_codes(unknown, f"{self.ref.key}: {self.ref}")  # the codes no class answers
        return used

    def polygons(self, raster: GeoRaster, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The polygons whose box touches the window and their classes, in burning order (winners last)."""
        row, col = float(window.row_off), float(window.col_off)
        bounds = pixel_polygon(raster, row, col, row + float(window.height), col + float(window.width)).bounds
        with raster_access.vector_environment(allow_remote=False):
            _, _, wkb, fields = pyogrio.raw.read(
                self.files[raster.crs], bbox=bounds, columns=["cls", "priority", "area", "source_fid"]
            )
        if wkb is None or not len(wkb):
            return np.empty(0, object), np.empty(0, np.uint8)
        classes, priority, area, fid = fields
        order = np.lexsort((fid, -area, priority))  # the last key sorts first
        return shapely.from_wkb(wkb[order]), np.asarray(classes[order], np.uint8)

    def burn(
        self, raster: GeoRaster, window: Window, fill: int, count_conflicts: bool = False
    ) -> tuple[np.ndarray, int]:
        """The window's labels (``H x W`` uint8, ``fill`` where no polygon covers a pixel centre) and,
        with ``count_conflicts``, how many of its pixels polygons of different classes cover."""
        shape = (int(window.height), int(window.width))
        geoms, classes = self.polygons(raster, window)
        if not len(geoms):
            return np.full(shape, fill, np.uint8), 0
        transform = window_transform(raster.transform, window)
        labels = rasterize(
            geojson_shapes(geoms, classes.tolist()),
            out_shape=shape,
            transform=transform,
            fill=fill,
            dtype="uint8",
        )
        conflicts = (
            _conflicts(geoms, classes, shape, transform, self.classes.ignore_index) if count_conflicts else 0
        )
        return labels, conflicts

    def summary(self) -> str:
        c = self.counts
        parts = [f"{self.used} of {c['features']} features used"]
        for key, what in (
            ("outside", "outside every raster"),
            ("no class", "without a class"),
            ("no geometry", "without a geometry"),
            ("not polygons", "not polygons (skipped)"),
            ("repaired", "invalid, repaired with make_valid"),
        ):
            if c[key]:
                parts.append(f"{c[key]} {what}")
        return f"labels {self.ref} ({self.crs_name}): " + ", ".join(parts)


def geojson_shapes(polygons: np.ndarray, values: list[int]) -> list[tuple[dict[str, Any], int]]:
    """``(GeoJSON polygon, value)`` pairs for ``rasterize``, built from the coordinate arrays at once
    (twice as fast as each geometry's ``__geo_interface__``, which dominates a window's burning)."""
    rings, owner = shapely.get_rings(polygons, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    ends = np.searchsorted(ring_of, np.arange(len(rings) + 1)).tolist()
    flat = coords.tolist()
    ring_lists = [flat[ends[i] : ends[i + 1]] for i in range(len(rings))]
    starts = np.searchsorted(owner, np.arange(len(polygons) + 1)).tolist()
    return [
        ({"type": "Polygon", "coordinates": ring_lists[starts[i] : starts[i + 1]]}, value)
        for i, value in enumerate(values)
    ]


def _numbers(values: np.ndarray, ref: LayerRef, field: str) -> np.ndarray:
    try:
        numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{ref} field {field!r} holds values that are not numbers", key="data.priority_field"
        ) from None
    return np.nan_to_num(numbers, nan=0.0)  # no priority: 0


def _conflicts(
    geoms: np.ndarray, classes: np.ndarray, shape: tuple[int, int], transform: Any, ignore: int
) -> int:
    """Pixels whose centre lies inside polygons of two or more classes (the ignore code excluded)."""
    real = classes != ignore
    geoms, classes = geoms[real], classes[real]
    if len(np.unique(classes)) < 2:
        return 0
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = (left < right) & (classes[left] != classes[right])
    left, right = left[pairs], right[pairs]
    if not len(left):
        return 0
    inner = shapely.relate_pattern(geoms[left], geoms[right], "T********")  # interiors meet: not just edges
    involved = np.unique(np.concatenate([left[inner], right[inner]]))
    if not len(involved):
        return 0
    covered = np.zeros(shape, np.uint8)
    for value in np.unique(classes[involved]):
        chosen = involved[classes[involved] == value]
        covered += rasterize(
            geojson_shapes(geoms[chosen], [1] * len(chosen)),
            out_shape=shape,
            transform=transform,
            fill=0,
            dtype="uint8",
        )
    return int((covered >= 2).sum())


def read_areas(
    ref: LayerRef, rasters: Sequence[GeoRaster], strict: bool, what: str
) -> tuple[list[AreaOfInterest], Counter[str]]:
    """The polygons of an area layer on each raster's grid (reprojected), and the counts of the read."""
    geoms, counts, info = read_layer(ref, strict, what)
    moves = transformers(ref, info, rasters)
    areas = []
    for raster in rasters:
        polygons = reproject(geoms, moves[raster.crs], f"{ref.key}: {ref}")
        polygons = polygons[shapely.intersects(raster.footprint, polygons)]
        areas.append(AreaOfInterest(polygons, raster.transform, str(ref)))
    if not any(len(a.polygons) for a in areas):
        extents = "; ".join(f"{r.name}: {_extent(r.bounds)}" for r in rasters)
        raise InputError(
            f"{ref.key}: {what} {ref} does not overlap any raster: it covers "
            f"{_extent(info['total_bounds'])} ({CRS.from_user_input(info['crs']).name}); the rasters cover {extents}"
        )
    return areas, counts


def _extent(bounds: Sequence[float]) -> str:
    left, bottom, right, top = bounds
    return f"x {left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g}"
