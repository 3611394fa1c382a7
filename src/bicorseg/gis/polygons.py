"""Class raster -> polygons per class, window by window: a coverage (shared edges shared), seams dissolved.

What the output is and promises, and how (coverage, simplification within
:data:`SIMPLIFY_AREA_CHANGE` of each polygon's area, windows and seams, ``min_area``,
``max_polygons``, formats, metres), is in ``docs/gis.md`` (Polygons). Per window read with a
margin (:mod:`bicorseg.gis.regions`), every region is polygonised (``rasterio.features.shapes``,
4-connected, integer pixel coordinates) with a vertex wherever three regions meet and the window
simplified as one coverage (``shapely.coverage_simplify``, border fixed, at most
:data:`SIMPLIFY_ROUNDS` rounds); pieces that reach a seam are grouped by union-find and dissolved
once none waits for an unread window. Each polygon is then normalised, georeferenced, reprojected,
repaired if need be (one feature per polygonal part) and measured (:class:`bicorseg.gis.crs.Measure`).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bicorseg.gis import DEFAULT_MAX_POLYGONS, require_vector

require_vector()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import shapely  # noqa: E402
from pyproj import Transformer  # noqa: E402
from rasterio.features import shapes  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from bicorseg.atomic import atomic_output, ensure_writable, write_error  # noqa: E402
from bicorseg.defaults import DEFAULT_WINDOW  # noqa: E402
from bicorseg.errors import ConfigError, InputError  # noqa: E402
from bicorseg.gis.crs import Measure, pixel_size, to_pyproj  # noqa: E402
from bicorseg.gis.regions import (  # noqa: E402
    merge_small_regions,
    node_vertices,
    read_labels,
    regions_beyond,
)
from bicorseg.gis.source import ClassColours, ClassRaster  # noqa: E402
from bicorseg.gis.vectorfile import RASTER_CRS, default_crs, driver_for, write_features  # noqa: E402
from bicorseg.raster_access import InputPath  # noqa: E402

DEFAULT_SIMPLIFY_PIXELS = 1.5
SIMPLIFY_AREA_CHANGE = 0.02  # a polygon whose simplified area differs more keeps its pixel outline
SIMPLIFY_ROUNDS = 4  # coverage simplifications of a window before it keeps its pixel outlines
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
    """Options of :func:`vectorize_raster` (see ``docs/gis.md``, Polygons)."""

    simplify: float | None = None  # tolerance in the raster's CRS units; None = 1.5 pixels; 0 = none
    min_area: float = 0.0  # square metres: smaller regions are merged into their neighbours; 0 = none
    to_crs: str | None = None  # output CRS (anything pyproj reads, or "raster"); None = the format's default
    classes: Sequence[str | int] | None = None  # names or ids; None = every class
    class_table: ClassColours | None = None  # read by the caller; None = the raster's tags
    window: int = DEFAULT_WINDOW  # pixels (at least 16)
    max_polygons: int = DEFAULT_MAX_POLYGONS  # regions per window
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.simplify is not None and not self.simplify >= 0:
            raise ConfigError(f"simplify must be 0 or more (CRS units), got {self.simplify}")
        if not self.min_area >= 0:
            raise ConfigError(f"min_area must be 0 or more (square metres), got {self.min_area}")
        if self.max_polygons < 1:
            raise ConfigError(f"max_polygons must be at least 1, got {self.max_polygons}")


@dataclass
class ClassSummary:
    class_id: int
    class_name: str
    features: int = 0
    area_m2: float = 0.0


@dataclass
class VectorizeSummary:
    """What :func:`vectorize_raster` wrote."""

    raster: InputPath
    output: Path
    crs: str
    area_method: str
    simplify: float  # tolerance used, in the raster's CRS units
    windows: int
    merge_pixels: int = 0  # regions of fewer pixels were merged into their neighbours (0: none)
    features: int = 0
    unsimplified: int = 0  # polygons (pieces per window) kept with their pixel outline
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
    output = Path(output)
    driver = driver_for(output)
    ensure_writable(output, overwrite=options.overwrite)
    with ClassRaster.open(path, options.class_table) as raster:
        src = raster.src
        if src.crs is None:
            raise InputError(f"{raster.path} has no CRS: polygons need one to be placed and measured")
        selected = raster.select(options.classes)
        raster_crs = to_pyproj(src.crs, str(raster.path))
        to_crs = options.to_crs if options.to_crs is not None else default_crs(driver)
        out_crs = raster_crs if to_crs in (None, RASTER_CRS) else to_pyproj(to_crs, "to_crs")
        reproject = None
        bounds = tuple(src.bounds)
        if not out_crs.equals(raster_crs):
            reproject = Transformer.from_crs(raster_crs, out_crs, always_xy=True)
            bounds = reproject.transform_bounds(*bounds)
        measure = Measure.for_extent(out_crs, bounds, str(output))
        pixel = pixel_size(src.transform)
        tolerance = DEFAULT_SIMPLIFY_PIXELS * pixel if options.simplify is None else options.simplify
        windows = list(raster.windows(options.window))
        summary = VectorizeSummary(
            raster.path, output, out_crs.to_string(), measure.describe(), tolerance, len(windows),
            merge_pixels=_merge_pixels(raster, options),
        )  # fmt: skip
        cutter = _WindowPolygons(
            raster, options.window, selected, tolerance / pixel, options.max_polygons, summary
        )
        finisher = _Finisher(raster, reproject, measure, summary)
        pieces = _dissolved_polygons(raster, windows, cutter)
        try:
            with atomic_output(output) as temp:
                write_features(temp, driver, output.stem, SCHEMA, finisher.batches(pieces), out_crs)
        except OSError as error:
            raise write_error(output, error) from error
    summary.seconds = time.perf_counter() - start
    return summary


def _merge_pixels(raster: ClassRaster, options: VectorizeOptions) -> int:
    """``min_area`` in pixels (the area of the pixel at the raster's centre); 0: no merging."""
    if options.min_area <= 0:
        return 0
    src = raster.src
    measure = Measure.for_extent(src.crs, tuple(src.bounds), str(raster.path))
    pixel_m2 = float(np.mean(measure.pixel_areas(src.transform, src.height // 2, src.width // 2, 1, 1)))
    size = math.ceil(options.min_area / pixel_m2)
    limit = options.window // 4
    if size > limit:
        raise ConfigError(
            f"min_area {options.min_area:g} m2 is {size} pixels of {pixel_m2:.4g} m2 here; at most {limit} "
            "pixels (a quarter of `window`) can be merged: raise `window`"
        )
    return size if size > 1 else 0


# --- one window: regions, polygons, coverage simplification -----------------------------------------


class _WindowPolygons:
    """The polygons of one window's regions, with nodes, simplified as a coverage (module docstring)."""

    def __init__(self, raster: ClassRaster, window: int, selected: set[int] | None, tolerance_px: float,
                 max_polygons: int, summary: VectorizeSummary) -> None:  # fmt: skip
        self.raster, self.window, self.tolerance_px = raster, window, tolerance_px
        self.max_polygons, self.summary = max_polygons, summary
        self.chosen = None if selected is None else np.array(sorted(selected))
        self.margin = summary.merge_pixels + 1

    def __call__(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Polygons (pixel coordinates of the whole raster) and class ids of the chosen classes."""
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        labels = read_labels(self.raster, window, self.margin)
        if self.summary.merge_pixels:
            labels = merge_small_regions(labels, self.summary.merge_pixels)
        m = self.margin
        ring = labels[m - 1 : m + h + 1, m - 1 : m + w + 1]
        core = ring[1:-1, 1:-1]
        chosen = core >= 0 if self.chosen is None else np.isin(core, self.chosen)
        if not chosen.any():
            return np.empty(0, object), np.empty(0, np.int64)
        count = regions_beyond(core, self.max_polygons)
        if count is not None:
            raise InputError(
                f"{self.raster.path}: the window at row {row}, column {col} ({w} x {h} px) has {count:,} "
                f"regions, more than the {self.max_polygons:,} allowed per window (`max_polygons`): the map "
                "is speckled; merge small regions with `min_area`, or raise `max_polygons`"
            )
        geoms, values = _polygonise(core, row, col)
        self.nodes, self.origin = node_vertices(ring), (row, col)
        geoms = _with_nodes(geoms, self.nodes, row, col)
        if self.tolerance_px > 0:  # every class checked, so that choosing classes changes no polygon
            geoms, fixed = _simplify_coverage(geoms, self.tolerance_px, values >= 0)
            self.summary.unsimplified += fixed
        keep = values >= 0 if self.chosen is None else np.isin(values, self.chosen)
        return geoms[keep], values[keep]

    def border_nodes(self, geoms: np.ndarray) -> list[set[int]]:
        """Per polygon of the last window, its nodes on the window's border (as ``vertex_key``)."""
        found: list[set[int]] = [set() for _ in range(len(geoms))]
        if not len(geoms):
            return found
        coords, which = shapely.get_coordinates(geoms, return_index=True)
        (row, col), (rows, cols) = self.origin, self.nodes.shape
        x, y = coords[:, 0].astype(np.int64), coords[:, 1].astype(np.int64)
        border = (x == col) | (x == col + cols - 1) | (y == row) | (y == row + rows - 1)
        border[border] = self.nodes[y[border] - row, x[border] - col]
        for i, key in zip(which[border].tolist(), vertex_key(x[border], y[border], self.raster).tolist()):
            found[i].add(key)
        return found


def vertex_key(x: np.ndarray, y: np.ndarray, raster: ClassRaster) -> np.ndarray:
    """One integer per pixel corner ``(x, y)`` of the raster."""
    return x * (raster.src.height + 1) + y


def _polygonise(labels: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (pixel coordinates of the whole raster) and values of every region of a window."""
    coords: list = []
    ring_ends: list[int] = []
    geom_ends: list[int] = []
    values: list[float] = []
    for geojson, value in shapes(labels, connectivity=4, transform=Affine.translation(col, row)):
        for ring in geojson["coordinates"]:
            coords.extend(ring)
            ring_ends.append(len(coords))
        geom_ends.append(len(ring_ends))
        values.append(value)
    offsets = (np.array([0, *ring_ends]), np.array([0, *geom_ends]))
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, np.array(coords, float), offsets)
    return geoms, np.asarray(values, np.int64)


def _with_nodes(geoms: np.ndarray, nodes: np.ndarray, row: int, col: int) -> np.ndarray:
    """The polygons with a vertex at each of their corners and at each node on their rings, no other.

    Every ring is cut into unit steps (its vertices are pixel corners), and a vertex is kept where
    the ring turns or where ``nodes`` (vertex flags of the window, from ``(row, col)``) says that
    regions meet.
    """
    rings = _Rings(shapely.segmentize(geoms, 1.0))
    x, y = rings.points[:, 0].astype(np.int64) - col, rings.points[:, 1].astype(np.int64) - row
    return rings.keeping(rings.turns | nodes[y, x])


class _Rings:
    """The rings of polygons as flat arrays of their vertices (without the closing ones)."""

    def __init__(self, geoms: np.ndarray) -> None:
        _, coords, (ring_offsets, self.geom_offsets) = shapely.to_ragged_array(geoms)
        coords = np.rint(coords)  # pixel corners (segmentize interpolates)
        self.lengths = np.diff(ring_offsets) - 1
        open_ring = np.ones(len(coords), bool)
        open_ring[ring_offsets[1:] - 1] = False
        self.points, self.ring = coords[open_ring], np.repeat(np.arange(len(self.lengths)), self.lengths)

    @property
    def turns(self) -> np.ndarray:
        """Whether the ring turns at each vertex (False: the vertex lies on a straight edge)."""
        index = np.arange(len(self.points))
        position = index - np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)
        size = self.lengths[self.ring]
        before = np.where(position == 0, index + size - 1, index - 1)
        after = np.where(position == size - 1, index - size + 1, index + 1)
        incoming, outgoing = self.points - self.points[before], self.points[after] - self.points
        return incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0] != 0

    def keeping(self, keep: np.ndarray) -> np.ndarray:
        """The polygons with the vertices where ``keep`` is set (every ring keeps its turns)."""
        kept, kept_ring = self.points[keep], self.ring[keep]
        counts = np.bincount(kept_ring, minlength=len(self.lengths))
        offsets = np.concatenate([[0], np.cumsum(counts + 1)])
        out = np.empty((offsets[-1], 2))
        out[np.arange(len(kept)) + kept_ring] = kept
        out[offsets[1:] - 1] = kept[np.cumsum(counts) - counts]  # close each ring on its first vertex
        return shapely.from_ragged_array(shapely.GeometryType.POLYGON, out, (offsets, self.geom_offsets))


def _simplify_coverage(geoms: np.ndarray, tolerance: float, checked: np.ndarray) -> tuple[np.ndarray, int]:
    """A window's polygons simplified as a coverage with its border fixed; a ``checked`` polygon whose
    area would change by more than ``SIMPLIFY_AREA_CHANGE`` keeps its pixel outline (and the number
    of those)."""
    area = shapely.area(geoms)
    # at most tolerance^2 px2: dropping any vertex (a lattice triangle, 0.5 px2 at least) would change
    # the area by more than 2 %; they keep their outlines from the first round on
    fixed = checked & (area <= tolerance**2)
    for _ in range(SIMPLIFY_ROUNDS):
        free = np.nonzero(~fixed)[0]
        simplified = shapely.coverage_simplify(geoms[free], tolerance, simplify_boundary=False)
        change = np.abs(shapely.area(simplified) - area[free])
        moved = free[(change > SIMPLIFY_AREA_CHANGE * area[free]) & checked[free]]
        if not len(moved):
            out = geoms.copy()
            out[free] = simplified
            return out, int((fixed & checked).sum())
        fixed[moved] = True
    return geoms, int(checked.sum())


# --- polygons dissolved across window seams ---------------------------------------------------------


class _Groups:
    """Pending pieces grouped by union-find; a group is done when no piece waits for a window."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self.waits: dict[int, int] = {}
        self.geom: dict[int, shapely.Polygon] = {}
        self.klass: dict[int, int] = {}
        self.nodes: dict[int, set[int]] = {}  # a piece's nodes on window borders
        self.next_id = 0

    def add(self, geom: shapely.Polygon, klass: int, waits: int, nodes: set[int]) -> int:
        piece = self.next_id
        self.next_id += 1
        self.parent[piece], self.members[piece], self.waits[piece] = piece, [piece], waits
        self.geom[piece], self.klass[piece], self.nodes[piece] = geom, klass, nodes
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

    def pop_if_done(self, root: int) -> tuple[shapely.Polygon, int, set[int]] | None:
        """A finished group: its pieces dissolved, its class and its nodes on window borders."""
        if root not in self.waits or self.waits[root] > 0:
            return None
        members = self.members.pop(root)
        del self.waits[root]
        klass = self.klass[root]
        parts = [self.geom.pop(m) for m in members]
        nodes = set().union(*(self.nodes.pop(m) for m in members))
        for m in members:
            del self.parent[m], self.klass[m]
        return (parts[0] if len(parts) == 1 else shapely.union_all(parts)), klass, nodes

    def match(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the pieces on both sides of a seam (label arrays of the pixels along it)."""
        both = (a >= 0) & (b >= 0)
        if not both.any():
            return
        for p, q in np.unique(np.stack([a[both], b[both]], axis=1), axis=0):
            if self.klass[int(p)] == self.klass[int(q)]:
                self.union(int(p), int(q))


def _dissolved_polygons(
    raster: ClassRaster, windows: list, polygons_of: _WindowPolygons
) -> Iterator[tuple[shapely.Polygon, int]]:
    """``(polygon in pixel coordinates, class id)`` for every connected region, window by window."""
    height, width = raster.src.height, raster.src.width
    groups = _Groups()
    bottom_labels = np.full(width, -1, np.int64)  # pieces along the bottom of the previous window row
    bottom_waiting: dict[int, list[int]] = {}
    right_labels = np.empty(0, np.int64)
    right_waiting: list[int] = []
    for window in windows:
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        geoms, classes = polygons_of(window)
        bounds = shapely.bounds(geoms) if len(geoms) else np.empty((0, 4))
        at_left = (bounds[:, 0] == col) & (col > 0)
        at_top = (bounds[:, 1] == row) & (row > 0)
        at_right = (bounds[:, 2] == col + w) & (col + w < width)
        at_bottom = (bounds[:, 3] == row + h) & (row + h < height)
        pending = at_left | at_top | at_right | at_bottom
        for i in np.nonzero(~pending)[0]:
            yield geoms[i], int(classes[i])
        index = np.nonzero(pending)[0]
        nodes = polygons_of.border_nodes(geoms[index])
        ids = np.array(
            [groups.add(geoms[i], int(classes[i]), int(at_right[i]) + int(at_bottom[i]), found)
             for i, found in zip(index, nodes)],
            np.int64,
        )  # fmt: skip
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
                geom, klass, found = done
                yield _without_seam_points(geom, found, raster, polygons_of.window), klass
    assert not groups.members, "every pending polygon is finished after the last window"


def _without_seam_points(
    geom: shapely.Polygon, nodes: set[int], raster: ClassRaster, window: int
) -> shapely.Polygon:
    """A dissolved polygon without the vertices its pieces had where its edges cross window seams
    (straight there, and no node: no other polygon has a vertex there), so that it does not depend on
    the windows."""
    rings = _Rings(np.array([geom], object))
    x, y = rings.points[:, 0].astype(np.int64), rings.points[:, 1].astype(np.int64)
    height, width = raster.src.height, raster.src.width
    on_seam = ((x % window == 0) & (x > 0) & (x < width)) | ((y % window == 0) & (y > 0) & (y < height))
    drop = on_seam & ~rings.turns
    if drop.any() and nodes:
        drop &= ~np.isin(vertex_key(x, y, raster), np.fromiter(nodes, np.int64, len(nodes)))
    return rings.keeping(~drop)[0] if drop.any() else geom


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
    """Normalise, georeference, repair and measure polygons; Arrow batches out."""

    def __init__(
        self, raster: ClassRaster, reproject: Transformer | None, measure: Measure, summary: VectorizeSummary
    ) -> None:
        self.raster, self.reproject, self.measure, self.summary = raster, reproject, measure, summary
        t = raster.src.transform
        self.matrix = np.array([[t.a, t.d], [t.b, t.e]])
        self.offset = np.array([t.c, t.f])

    def batches(self, pieces: Iterator[tuple[shapely.Polygon, int]]) -> Iterator[pa.RecordBatch]:
        pieces = iter(pieces)  # consumed batch by batch
        while chunk := list(itertools.islice(pieces, _BATCH)):
            geoms, classes = zip(*chunk)
            yield from self._batch(list(geoms), list(classes))

    def _batch(self, geoms: list, classes: list[int]) -> Iterator[pa.RecordBatch]:
        array = np.empty(len(geoms), object)
        array[:] = geoms
        array = shapely.normalize(array)  # a canonical ring start; the vertices stay as they are
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
        keep = area > 0
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
