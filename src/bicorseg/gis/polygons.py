"""Class raster -> polygons per class, window by window, with the polygons cut at window seams dissolved.

:func:`vectorize_raster` reads the raster in windows (2048 px by default) in row-major order and
polygonises each with ``rasterio.features.shapes`` (4-connected regions of one class, in pixel
coordinates, so that everything is exact integer geometry). A polygon that does not reach a window
edge shared with another window is final and written at once. One that does is kept pending: the
class pixels on both sides of each seam tell which pending pieces belong together (same class,
side by side across the seam), pieces are grouped with a union-find, and a group is dissolved
(``shapely.union_all``) and written as soon as none of its pieces waits for a window not yet read.
Memory holds one window, one raster row of seam labels and the pending groups, never the whole
map, and the polygons are the same as from one window over the whole raster.

Each polygon is then

1. freed of collinear vertices and normalised (a canonical ring start, so the result does not
   depend on the windows),
2. simplified with Douglas-Peucker, topology preserved per polygon (``shapely.simplify`` with
   ``preserve_topology=True``: rings stay valid and never vanish; neighbouring polygons are
   simplified independently, so their shared boundaries may no longer match exactly): tolerance
   ``simplify`` in the raster's CRS units, default 1.5 pixels, 0 disables it; a polygon whose
   area would change by more than 2 % (small or thin ones: a one-pixel square would become a
   triangle) keeps its pixel outline instead, so every polygon's area, and each class's total,
   stays within 2 % of its pixels' area,
3. moved to the raster's CRS (its transform), reprojected to ``to_crs`` if given,
4. repaired with ``shapely.make_valid`` if it is not valid (parts that are not polygons dropped,
   a multi-part result written as one feature per part),
5. measured in metres (:class:`bicorseg.gis.crs.Measure`: planar for projected CRSs that keep
   areas, on the ellipsoid otherwise) and dropped if smaller than ``min_area`` square metres.

Fields: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (holes included); the geometry
is a polygon (exterior counter-clockwise) in the raster's CRS or ``to_crs``. Nodata pixels and
classes not chosen belong to no polygon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import shapely  # noqa: E402
from pyproj import Transformer  # noqa: E402
from rasterio.features import shapes  # noqa: E402
from rasterio.transform import Affine  # noqa: E402

from bicorseg.atomic import atomic_output  # noqa: E402
from bicorseg.errors import ConfigError, InputError, OutputError  # noqa: E402
from bicorseg.gis.crs import Measure, pixel_size, to_pyproj  # noqa: E402
from bicorseg.gis.source import DEFAULT_WINDOW, ClassRaster  # noqa: E402
from bicorseg.gis.vectorfile import driver_for, write_features  # noqa: E402
from bicorseg.raster_access import input_path  # noqa: E402

DEFAULT_SIMPLIFY_PIXELS = 1.5
SIMPLIFY_AREA_CHANGE = 0.02  # a polygon whose simplified area differs more keeps its pixel outline
_BATCH = 2000  # features per written batch

SCHEMA = pa.schema(
    [
        pa.field("class_id", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("area_m2", pa.float64()),
        pa.field("perimeter_m", pa.float64()),
        pa.field("geometry", pa.binary()),
    ]
)


@dataclass
class VectorizeOptions:
    """Options of :func:`vectorize_raster` (see the module docstring)."""

    simplify: float | None = None  # tolerance in the raster's CRS units; None = 1.5 pixels; 0 = none
    min_area: float = 0.0  # square metres
    to_crs: str | None = None  # output CRS (anything pyproj reads); None = the raster's
    classes: Sequence[str | int] | None = None  # names or ids; None = every class
    class_table: str | os.PathLike | None = None  # YAML class table; None = the raster's tags
    window: int = DEFAULT_WINDOW  # pixels (at least 16)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.simplify is not None and not self.simplify >= 0:
            raise ConfigError(f"simplify must be 0 or more (CRS units), got {self.simplify}")
        if not self.min_area >= 0:
            raise ConfigError(f"min_area must be 0 or more (square metres), got {self.min_area}")


@dataclass
class ClassSummary:
    class_id: int
    class_name: str
    features: int = 0
    area_m2: float = 0.0


@dataclass
class VectorizeSummary:
    """What :func:`vectorize_raster` wrote."""

    raster: Path
    output: Path
    crs: str
    area_method: str
    simplify: float  # tolerance used, in the raster's CRS units
    windows: int
    features: int = 0
    unsimplified: int = 0  # polygons kept with their pixel outline (simplifying changed their area > 2 %)
    classes: dict[int, ClassSummary] = field(default_factory=dict)
    seconds: float = 0.0


def vectorize_raster(
    path: str | os.PathLike, output: str | os.PathLike, options: VectorizeOptions | None = None
) -> VectorizeSummary:
    """Polygons of the class raster ``path`` written to ``output`` (.gpkg, .fgb, .geojson, .parquet).

    The output appears only when complete; an existing one is replaced only with ``overwrite``.
    """
    start = time.perf_counter()
    options = options or VectorizeOptions()
    path, output = input_path(path), Path(output)
    driver = driver_for(output)
    if output.exists() and not options.overwrite:
        raise OutputError(f"{output} exists (use `overwrite` to replace it)")
    with ClassRaster.open(path, options.class_table) as raster:
        src = raster.src
        if src.crs is None:
            raise InputError(f"{path} has no CRS: polygons need one to be placed and measured")
        selected = raster.select(options.classes)
        raster_crs = to_pyproj(src.crs, str(path))
        out_crs = raster_crs if options.to_crs is None else to_pyproj(options.to_crs, "to_crs")
        reproject = None
        bounds = tuple(src.bounds)
        if not out_crs.equals(raster_crs):
            reproject = Transformer.from_crs(raster_crs, out_crs, always_xy=True)
            bounds = reproject.transform_bounds(*bounds)
        measure = Measure.for_extent(out_crs, bounds, str(output))
        tolerance = DEFAULT_SIMPLIFY_PIXELS * pixel_size(src.transform)
        if options.simplify is not None:
            tolerance = options.simplify
        windows = list(raster.windows(options.window))
        summary = VectorizeSummary(
            path, output, out_crs.to_string(), measure.describe(), tolerance, len(windows)
        )
        finisher = _Finisher(raster, src.transform, tolerance / pixel_size(src.transform), reproject,
                             measure, options.min_area, summary)  # fmt: skip
        pieces = _dissolved_polygons(raster, windows, selected)
        try:
            with atomic_output(output) as temp:
                write_features(temp, driver, output.stem, SCHEMA, finisher.batches(pieces), out_crs)
        except OSError as error:
            raise OutputError(f"cannot write {output}: {error.strerror or error}") from error
    summary.seconds = time.perf_counter() - start
    return summary


# --- polygons dissolved across window seams ---------------------------------------------------------


class _Groups:
    """Pending pieces grouped by union-find; a group is done when no piece waits for a window."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self.waits: dict[int, int] = {}
        self.geom: dict[int, shapely.Polygon] = {}
        self.klass: dict[int, int] = {}
        self.next_id = 0

    def add(self, geom: shapely.Polygon, klass: int, waits: int) -> int:
        piece = self.next_id
        self.next_id += 1
        self.parent[piece], self.members[piece], self.waits[piece] = piece, [piece], waits
        self.geom[piece], self.klass[piece] = geom, klass
        return piece

    def find(self, piece: int) -> int:
        parent = self.parent
        while parent[piece] != piece:
            parent[piece] = parent[parent[piece]]
            piece = parent[piece]
        return piece

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        self.waits[ra] += self.waits.pop(rb)

    def release(self, piece: int) -> int:
        root = self.find(piece)
        self.waits[root] -= 1
        return root

    def pop_if_done(self, root: int) -> tuple[shapely.Polygon, int] | None:
        if root not in self.waits or self.waits[root] > 0:
            return None
        members = self.members.pop(root)
        del self.waits[root]
        klass = self.klass[root]
        parts = [self.geom.pop(m) for m in members]
        for m in members:
            del self.parent[m], self.klass[m]
        return (parts[0] if len(parts) == 1 else shapely.union_all(parts)), klass

    def match(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the pieces on both sides of a seam (label arrays of the pixels along it)."""
        both = (a >= 0) & (b >= 0)
        if not both.any():
            return
        for p, q in np.unique(np.stack([a[both], b[both]], axis=1), axis=0):
            if self.klass[int(p)] == self.klass[int(q)]:
                self.union(int(p), int(q))


def _dissolved_polygons(
    raster: ClassRaster, windows: list, selected: set[int] | None
) -> Iterator[tuple[shapely.Polygon, int]]:
    """``(polygon in pixel coordinates, class id)`` for every connected region, window by window."""
    height, width = raster.src.height, raster.src.width
    groups = _Groups()
    bottom_labels = np.full(width, -1, np.int64)  # pieces along the bottom of the previous window row
    bottom_waiting: dict[int, list[int]] = {}
    right_labels = np.empty(0, np.int64)
    right_waiting: list[int] = []
    chosen = None if selected is None else np.array(sorted(selected))
    for window in windows:
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        data, valid = raster.read(window)
        mask = valid if chosen is None else valid & np.isin(data, chosen)
        geoms, classes = _polygonise(data, mask, row, col)
        bounds = shapely.bounds(geoms) if len(geoms) else np.empty((0, 4))
        at_left = (bounds[:, 0] == col) & (col > 0)
        at_top = (bounds[:, 1] == row) & (row > 0)
        at_right = (bounds[:, 2] == col + w) & (col + w < width)
        at_bottom = (bounds[:, 3] == row + h) & (row + h < height)
        pending = at_left | at_top | at_right | at_bottom
        for i in np.nonzero(~pending)[0]:
            yield geoms[i], int(classes[i])
        index = np.nonzero(pending)[0]
        ids = np.array(
            [groups.add(geoms[i], int(classes[i]), int(at_right[i]) + int(at_bottom[i])) for i in index],
            np.int64,
        )
        edges = _edge_labels(geoms[index], ids, row, col, h, w)
        if col > 0:
            groups.match(right_labels, edges["left"])
        if row > 0:
            groups.match(bottom_labels[col : col + w], edges["top"])
        touched = {groups.find(int(p)) for p in ids}
        previous = (right_waiting if col > 0 else []) + bottom_waiting.pop(col, [])
        touched.update(groups.release(p) for p in previous)
        right_labels, right_waiting = edges["right"], ids[at_right[index]].tolist()
        bottom_labels[col : col + w] = edges["bottom"]
        bottom_waiting[col] = ids[at_bottom[index]].tolist()
        for root in touched:
            done = groups.pop_if_done(root)
            if done is not None:
                yield done
    assert not groups.members, "every pending polygon is finished after the last window"


def _polygonise(data: np.ndarray, mask: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (pixel coordinates of the whole raster) and class ids of one window."""
    if not mask.any():
        return np.empty(0, object), np.empty(0, np.int64)
    geoms, classes = [], []
    for geojson, value in shapes(data, mask=mask, connectivity=4, transform=Affine.translation(col, row)):
        geoms.append(shapely.geometry.shape(geojson))
        classes.append(int(value))
    out = np.empty(len(geoms), object)
    out[:] = geoms
    return out, np.asarray(classes, np.int64)


def _edge_labels(
    geoms: np.ndarray, ids: np.ndarray, row: int, col: int, h: int, w: int
) -> dict[str, np.ndarray]:
    """Per window edge, the piece id of each pixel along it (-1: none), read from the exterior rings."""
    labels = {
        "left": np.full(h, -1, np.int64),
        "right": np.full(h, -1, np.int64),
        "top": np.full(w, -1, np.int64),
        "bottom": np.full(w, -1, np.int64),
    }
    if not len(geoms):
        return labels
    coords, which = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    same = which[:-1] == which[1:]
    (x0, y0), (x1, y1) = coords[:-1].T, coords[1:].T
    owner = ids[which[:-1]]
    sides = (
        ("left", (x0 == col) & (x1 == col), y0, y1, row),
        ("right", (x0 == col + w) & (x1 == col + w), y0, y1, row),
        ("top", (y0 == row) & (y1 == row), x0, x1, col),
        ("bottom", (y0 == row + h) & (y1 == row + h), x0, x1, col),
    )
    for side, on_edge, a, b, offset in sides:
        for k in np.nonzero(same & on_edge)[0]:
            lo, hi = sorted((int(a[k]), int(b[k])))
            labels[side][lo - offset : hi - offset] = owner[k]
    return labels


# --- from pixel polygons to written features ---------------------------------------------------------


class _Finisher:
    """Simplify, georeference, repair, measure and filter polygons; Arrow batches out."""

    def __init__(self, raster, transform: Affine, tolerance_px: float, reproject, measure: Measure,
                 min_area: float, summary: VectorizeSummary) -> None:  # fmt: skip
        self.raster, self.tolerance_px, self.reproject = raster, tolerance_px, reproject
        self.measure, self.min_area, self.summary = measure, min_area, summary
        t = transform
        self.matrix = np.array([[t.a, t.d], [t.b, t.e]])
        self.offset = np.array([t.c, t.f])

    def batches(self, pieces: Iterator[tuple[shapely.Polygon, int]]) -> Iterator[pa.RecordBatch]:
        geoms: list[shapely.Polygon] = []
        classes: list[int] = []
        for geom, klass in pieces:
            geoms.append(geom)
            classes.append(klass)
            if len(geoms) >= _BATCH:
                yield from self._batch(geoms, classes)
                geoms, classes = [], []
        if geoms:
            yield from self._batch(geoms, classes)

    def _batch(self, geoms: list, classes: list[int]) -> Iterator[pa.RecordBatch]:
        array = np.empty(len(geoms), object)
        array[:] = geoms
        array = shapely.normalize(shapely.simplify(array, 0.0, preserve_topology=False))
        if self.tolerance_px > 0:
            simplified = shapely.simplify(array, self.tolerance_px, preserve_topology=True)
            before = shapely.area(array)
            kept = np.abs(shapely.area(simplified) - before) <= SIMPLIFY_AREA_CHANGE * before
            array = np.where(kept, simplified, array)
            self.summary.unsimplified += int((~kept).sum())
        array = shapely.transform(array, lambda c: c @ self.matrix + self.offset)
        if self.reproject is not None:
            tr = self.reproject
            array = shapely.transform(array, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        invalid = ~shapely.is_valid(array)
        if invalid.any():
            array[invalid] = shapely.make_valid(array[invalid])
        parts, index = shapely.get_parts(array, return_index=True)
        polygon = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
        parts, ids = parts[polygon], np.asarray(classes, np.int64)[index[polygon]]
        if not len(parts):
            return
        area, perimeter = self.measure.geometry(parts)
        keep = (area >= self.min_area) & (area > 0)
        parts, ids, area, perimeter = parts[keep], ids[keep], area[keep], perimeter[keep]
        if not len(parts):
            return
        parts = shapely.orient_polygons(parts, exterior_cw=False)
        names = [self.raster.name(int(i)) for i in ids]
        for i, name, a in zip(ids.tolist(), names, area.tolist()):
            entry = self.summary.classes.setdefault(i, ClassSummary(i, name))
            entry.features += 1
            entry.area_m2 += a
        self.summary.features += len(parts)
        yield pa.record_batch(
            [
                pa.array(ids, pa.int32()),
                pa.array(names, pa.string()),
                pa.array(area, pa.float64()),
                pa.array(perimeter, pa.float64()),
                pa.array(shapely.to_wkb(parts), pa.binary()),
            ],
            schema=SCHEMA,
        )
