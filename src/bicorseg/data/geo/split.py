"""Where the labels are, the spatial split into training and validation, and where chips are drawn.

All of it works on *cells*, squares of :data:`CELL` pixels of each raster's grid:

1. :func:`take_census` rasterises each raster once, window by window (bounded memory), and keeps
   the labelled pixels of each class per cell (only cells holding labels), and the pixels that
   polygons of different classes cover.
2. The validation area is a user's layer, or a seeded choice of square blocks of ``block`` pixels
   of the first raster's grid (:func:`choose_blocks`): blocks holding labels are drawn in a seeded
   order until they hold ``fraction`` of the labelled pixels. Blocks are polygons in the first
   raster's CRS, reprojected for the others, so rasters covering the same ground share them.
3. :func:`count_zones` counts the labelled pixels of each class by zone, exactly: *validation*
   (pixel centre inside the validation area), *buffer* (centre inside the area grown by ``buffer``
   pixels, not validation), *training* (the others). Windows that straddle a zone boundary are
   rasterised again with the zones' masks.
4. :class:`TrainingWindows` draws training windows: a lattice origin (every cell) with probability
   proportional to the training pixels under its window, then a uniform offset within the cell. A
   window whose box overlaps the (grown) validation area in more than a line is never drawn: lattice
   origins are checked exactly once, and every offset window again when drawn (falling back to its
   origin). :func:`validation_windows` is the fixed grid of windows over the validation area.

Memory besides one window: a few numbers per cell (a 64 x 64 pixel square), for each raster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import CRS, Transformer
from rasterio import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from bicorseg.data.geo.rasters import GeoRaster, map_xy, pixel_polygon
from bicorseg.errors import ConfigError, InputError
from bicorseg.gis.aoi import AreaOfInterest
from bicorseg.gis.layers import reproject

CELL = 64  # pixels per cell side
CENSUS_CELLS = 16  # cells per census window side (1024 pixels)
ZONES = ("training", "validation", "buffer")

# labels of one window: (raster index, window, count conflicts) -> (H x W uint8 labels, conflicts)
Labeller = Callable[[int, Window, bool], tuple[np.ndarray, int]]


@dataclass
class Census:
    """Labelled pixels of one raster: per cell (row-major ids of cells holding labels) and class."""

    grid: tuple[int, int]  # cells down and across
    cells: np.ndarray  # int64 ids, ascending
    counts: np.ndarray  # (len(cells), classes) uint32
    conflicts: int


def labelled_cells(census: Census) -> np.ndarray:
    """The cells holding labelled pixels, as a ``rows x cols`` bool grid."""
    cells = np.zeros(census.grid, bool)
    cells.reshape(-1)[census.cells] = True
    return cells


def _grid(raster: GeoRaster) -> tuple[int, int]:
    return math.ceil(raster.height / CELL), math.ceil(raster.width / CELL)


def grid_windows(raster: GeoRaster, size: int) -> list[Window]:
    """The windows of a grid of ``size`` pixels over a raster, row by row (cut short at its edges);
    the census takes :data:`CENSUS_CELLS` cells a side."""
    return [
        Window(col, row, min(size, raster.width - col), min(size, raster.height - row))
        for row in range(0, raster.height, size)
        for col in range(0, raster.width, size)
    ]


def _cell_counts(labels: np.ndarray, window: Window, grid: tuple[int, int], classes: int, keep: np.ndarray):
    """Cell ids and per-class counts of the pixels ``keep`` of a window's labels."""
    rows, cols = np.nonzero(keep)
    ids = ((int(window.row_off) + rows) // CELL) * grid[1] + (int(window.col_off) + cols) // CELL
    keys, counts = np.unique(ids * classes + labels[rows, cols], return_counts=True)
    cells, position = np.unique(keys // classes, return_inverse=True)
    table = np.zeros((len(cells), classes), np.uint32)
    np.add.at(table, (position, keys % classes), counts.astype(np.uint32))
    return cells, table


def take_census(index: int, raster: GeoRaster, labeller: Labeller, classes: int) -> Census:
    """Labelled pixels per cell and class of a raster, and the pixels of conflicting polygons."""
    grid = _grid(raster)
    cells, tables, conflicts = [], [], 0
    for window in grid_windows(raster, CELL * CENSUS_CELLS):
        labels, found = labeller(index, window, True)
        conflicts += found
        labelled = labels < classes
        if labelled.any():
            ids, table = _cell_counts(labels, window, grid, classes, labelled)
            cells.append(ids)
            tables.append(table)
    if not cells:
        return Census(grid, np.empty(0, np.int64), np.empty((0, classes), np.uint32), conflicts)
    ids, table = np.concatenate(cells), np.concatenate(tables)
    order = np.argsort(ids)
    return Census(grid, ids[order], table[order], conflicts)


# --- the validation area ---------------------------------------------------------------------------


def _transformer(source: str, target: str) -> Transformer | None:
    a, b = CRS.from_wkt(source), CRS.from_wkt(target)
    return None if a.equals(b) else Transformer.from_crs(a, b, always_xy=True)


def choose_blocks(
    rasters: Sequence[GeoRaster], censuses: Sequence[Census], block: int, fraction: float, seed: int
) -> tuple[shapely.Geometry, str]:
    """The validation blocks (one geometry in the first raster's CRS) and a sentence saying what was chosen."""
    reference = rasters[0]
    inverse = ~reference.transform
    totals: dict[tuple[int, int], int] = {}
    for raster, census in zip(rasters, censuses):
        if not len(census.cells):
            continue
        rows, cols = np.divmod(census.cells, census.grid[1])
        ys = np.minimum((rows + 0.5) * CELL, raster.height - 0.5)
        xs = np.minimum((cols + 0.5) * CELL, raster.width - 0.5)
        mx, my = map_xy(raster.transform, xs, ys)
        move = _transformer(raster.crs, reference.crs)
        if move is not None:
            mx, my = move.transform(mx, my)
        px, py = map_xy(inverse, np.asarray(mx), np.asarray(my))
        keys = np.stack([np.floor(np.asarray(py) / block), np.floor(np.asarray(px) / block)], 1).astype(
            np.int64
        )
        sums = census.counts.sum(1)
        for key, value in zip(map(tuple, keys), sums.tolist()):
            totals[key] = totals.get(key, 0) + int(value)
    labelled = sorted(k for k, v in totals.items() if v > 0)
    if len(labelled) < 2:
        raise ConfigError(
            f"the labelled pixels lie in {len(labelled)} block(s) of {block} px, so no block can be held out "
            "for validation: give smaller blocks or a validation area (data.val_area)",
            key="data.val_block",
        )
    order = np.random.default_rng(seed).permutation(len(labelled))
    total = sum(totals.values())
    chosen, taken = [], 0
    for position in order:
        if taken >= fraction * total:
            break
        chosen.append(labelled[position])
        taken += totals[labelled[position]]
    if len(chosen) == len(labelled):
        raise ConfigError(
            f"validation would take all {len(labelled)} labelled blocks of {block} px: give smaller blocks, "
            "a smaller data.val_fraction or a validation area (data.val_area)",
            key="data.val_block",
        )
    boxes = [
        pixel_polygon(reference, r * block, c * block, (r + 1) * block, (c + 1) * block) for r, c in chosen
    ]
    sentence = (
        f"{len(chosen)} of {len(labelled)} labelled blocks of {block} px (seed {seed}), "
        f"{100 * taken / total:.1f} % of the labelled pixels"
    )
    return shapely.union_all(boxes), sentence


def areas_from_blocks(rasters: Sequence[GeoRaster], blocks: shapely.Geometry) -> list[AreaOfInterest]:
    """The validation blocks on each raster's grid (reprojected, edges densified, where the CRS differs)."""
    reference = rasters[0]
    areas = []
    for raster in rasters:
        polygons = shapely.get_parts(blocks)
        move = _transformer(reference.crs, raster.crs)
        if move is not None:
            dense = shapely.segmentize(polygons, reference.pixel_size * 8)
            polygons = reproject(dense, move, "the validation blocks")
        polygons = polygons[shapely.intersects(polygons, raster.footprint)]
        areas.append(AreaOfInterest(polygons, raster.transform, "validation blocks"))
    return areas


def exclusion(raster: GeoRaster, area: AreaOfInterest, buffer: int) -> shapely.Geometry | None:
    """The area no training window may overlap: the validation area grown by ``buffer`` pixels."""
    if not len(area.polygons):
        return None
    union = shapely.union_all(area.polygons)
    if buffer > 0:
        union = shapely.buffer(union, buffer * raster.pixel_size)
    return union


# --- zones -----------------------------------------------------------------------------------------


@dataclass
class Zones:
    """Labelled pixels by zone: per-class totals (``counts[zone]``) and, per raster, the training
    pixels of each cell and the cells holding validation pixels."""

    counts: np.ndarray  # (3, classes) int64, zones in the order of ZONES
    train_cells: list[np.ndarray]  # per raster, (rows, cols) float64
    val_cells: list[np.ndarray]  # per raster, (rows, cols) bool


def count_zones(
    rasters: Sequence[GeoRaster],
    censuses: Sequence[Census],
    areas: Sequence[AreaOfInterest | None],
    exclusions: Sequence[shapely.Geometry | None],
    labeller: Labeller,
    classes: int,
) -> Zones:
    counts = np.zeros((len(ZONES), classes), np.int64)
    train_cells, val_cells = [], []
    for index, (raster, census) in enumerate(zip(rasters, censuses)):
        grid = census.grid
        train = np.zeros(grid, np.float64)
        val = np.zeros(grid, bool)
        area, excluded = areas[index], exclusions[index]
        zone_of = np.zeros(len(census.cells), np.int8)  # training unless found otherwise
        if excluded is not None and area is not None and len(census.cells):
            shapely.prepare(excluded)
            inside_area = shapely.union_all(area.polygons)
            shapely.prepare(inside_area)
            grown = AreaOfInterest(shapely.get_parts(excluded), raster.transform)
            windows = grid_windows(raster, CELL * CENSUS_CELLS)
            across = math.ceil(raster.width / (CELL * CENSUS_CELLS))
            rows, cols = np.divmod(census.cells, grid[1])
            window_of = (rows // CENSUS_CELLS) * across + cols // CENSUS_CELLS
            for key in np.unique(window_of):
                chosen = np.flatnonzero(window_of == key)
                window = windows[key]
                r, c, h, w = (int(v) for v in (window.row_off, window.col_off, window.height, window.width))
                if not shapely.intersects(excluded, pixel_polygon(raster, r, c, r + h, c + w)):
                    continue
                if shapely.contains(
                    inside_area, pixel_polygon(raster, r + 0.5, c + 0.5, r + h - 0.5, c + w - 0.5)
                ):
                    zone_of[chosen] = 1
                    continue
                # straddles a boundary: count the window's pixels zone by zone
                zone_of[chosen] = -1
                labels, _ = labeller(index, window, False)
                labelled = labels < classes
                in_val, in_grown = area.mask(r, c, h, w), grown.mask(r, c, h, w)
                for zone, where in enumerate((~in_grown, in_val, in_grown & ~in_val)):
                    ids, table = _cell_counts(labels, window, grid, classes, labelled & where)
                    counts[zone] += table.sum(0).astype(np.int64)
                    if zone == 0:
                        np.add.at(train.reshape(-1), ids, table.sum(1).astype(np.float64))
                    if zone == 1:
                        val.reshape(-1)[ids] = True
        for zone in (0, 1):
            chosen = zone_of == zone
            counts[zone] += census.counts[chosen].sum(0).astype(np.int64)
            if zone == 0:
                train.reshape(-1)[census.cells[chosen]] += census.counts[chosen].sum(1)
            else:
                val.reshape(-1)[census.cells[chosen]] = True
        train_cells.append(train)
        val_cells.append(val)
    return Zones(counts, train_cells, val_cells)


# --- drawing windows -------------------------------------------------------------------------------


def _box_sums(grid: np.ndarray, span_rows: int, span_cols: int, origins: tuple[int, int]) -> np.ndarray:
    """For each lattice origin (one per cell), the sum of ``grid`` over the cells its window covers."""
    padded = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1))
    padded[1:, 1:] = np.cumsum(np.cumsum(grid, 0), 1)
    rows = np.arange(origins[0])
    cols = np.arange(origins[1])
    r1 = np.minimum(rows + span_rows, grid.shape[0])
    c1 = np.minimum(cols + span_cols, grid.shape[1])
    return padded[r1][:, c1] - padded[rows][:, c1] - padded[r1][:, cols] + padded[rows][:, cols]


def overlaps(geometry: shapely.Geometry, box: shapely.Geometry) -> bool:
    """Whether the interiors meet (an area in common; sharing an edge is not overlapping)."""
    return bool(shapely.relate_pattern(box, geometry, "T********"))


class TrainingWindows:
    """Training windows of ``size`` pixels drawn toward labelled pixels, never overlapping the
    (grown) validation area (see the module docstring).

    Args:
        rasters: the rasters.
        train_cells: per raster, the training pixels of each cell (:class:`Zones`).
        exclusions: per raster, the geometry no window may overlap (None: nothing excluded).
        size: the window side in pixels (at least :data:`CELL`).
    """

    def __init__(
        self,
        rasters: Sequence[GeoRaster],
        train_cells: Sequence[np.ndarray],
        exclusions: Sequence[shapely.Geometry | None],
        size: int,
    ) -> None:
        if size < CELL:
            raise ConfigError(
                f"training windows must be at least {CELL} px, got {size}", key="data.crop_size"
            )
        self.rasters, self.size, self.exclusions = list(rasters), int(size), list(exclusions)
        weights, where = [], []
        for index, (raster, cells) in enumerate(zip(rasters, train_cells)):
            origins = (max(raster.height - size, 0) // CELL + 1, max(raster.width - size, 0) // CELL + 1)
            span = math.ceil(size / CELL) + 1  # a window from a lattice origin, offset by up to a cell
            weight = _box_sums(cells, span - 1, span - 1, origins)
            excluded = self.exclusions[index]
            if excluded is not None:
                weight[self._blocked(raster, excluded, origins)] = 0.0
            flat = np.flatnonzero(weight > 0)
            weights.append(weight.reshape(-1)[flat])
            where.append(np.stack([np.full(len(flat), index), flat // origins[1], flat % origins[1]], 1))
        self.where = np.concatenate(where) if where else np.empty((0, 3), np.int64)
        weight_all = np.concatenate(weights) if weights else np.empty(0)
        if not len(weight_all):
            raise InputError("no training window holds a labelled pixel outside the validation area")
        self.cumulative = np.cumsum(weight_all)

    def _blocked(self, raster: GeoRaster, excluded: shapely.Geometry, origins: tuple[int, int]) -> np.ndarray:
        """Lattice origins whose window overlaps ``excluded``: the candidates near it on a coarse
        raster (every cell it touches), then each exactly."""
        shape = _grid(raster)
        t = raster.transform
        cell_transform = Affine(t.a * CELL, t.b * CELL, t.c, t.d * CELL, t.e * CELL, t.f)
        touched = rasterize(
            [(excluded, 1)],
            out_shape=shape,
            transform=cell_transform,
            fill=0,
            all_touched=True,
            dtype="uint8",
        ).astype(np.float64)
        touched = np.maximum.reduce(
            [np.roll(np.roll(touched, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        )
        span = math.ceil(self.size / CELL) + 1
        near = _box_sums(touched, span, span, origins) > 0
        blocked = np.zeros(origins, bool)
        rows, cols = np.nonzero(near)
        if len(rows):
            boxes = [self.box(raster, int(r) * CELL, int(c) * CELL) for r, c in zip(rows, cols)]
            hits = shapely.relate_pattern(np.array(boxes, dtype=object), excluded, "T********")
            blocked[rows[hits], cols[hits]] = True
        return blocked

    def box(self, raster: GeoRaster, row: int, col: int) -> shapely.Polygon:
        height, width = min(self.size, raster.height), min(self.size, raster.width)
        return pixel_polygon(raster, row, col, row + height, col + width)

    def __len__(self) -> int:
        return len(self.cumulative)

    def draw(self, uniforms: Sequence[float]) -> tuple[int, Window]:
        """A window from three uniform numbers in [0, 1): the origin, the row and the column offsets."""
        pick = int(np.searchsorted(self.cumulative, uniforms[0] * self.cumulative[-1], side="right"))
        index, r, c = (int(v) for v in self.where[min(pick, len(self.where) - 1)])
        raster = self.rasters[index]
        top, left = max(raster.height - self.size, 0), max(raster.width - self.size, 0)
        row = min(r * CELL + int(uniforms[1] * CELL), top)
        col = min(c * CELL + int(uniforms[2] * CELL), left)
        excluded = self.exclusions[index]
        if excluded is not None and overlaps(excluded, self.box(raster, row, col)):
            row, col = r * CELL, c * CELL  # the origin itself was checked
        return index, Window(col, row, min(self.size, raster.width), min(self.size, raster.height))


def validation_windows(
    rasters: Sequence[GeoRaster], val_cells: Sequence[np.ndarray], size: int
) -> list[tuple[int, Window]]:
    """The fixed grid of ``size`` windows over each raster that touch a cell of ``val_cells`` (cells
    holding validation pixels, or any labelled pixels)."""
    found = []
    for index, (raster, cells) in enumerate(zip(rasters, val_cells)):
        if not cells.any():
            continue
        for window in grid_windows(raster, size):
            row, col = int(window.row_off), int(window.col_off)
            rows = slice(row // CELL, math.ceil((row + window.height) / CELL))
            cols = slice(col // CELL, math.ceil((col + window.width) / CELL))
            if cells[rows, cols].any():
                found.append((index, window))
    return found
