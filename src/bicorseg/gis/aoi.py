"""An area of interest on a raster's pixel grid: read from a vector layer, the windows its polygons
touch, the pixels inside.

The polygons are read by :mod:`bicorseg.gis.layers` and reprojected to the raster's CRS; a pixel is
inside when its centre lies inside a polygon (``rasterio.features.geometry_mask``), a window touches
the area when one of its pixels is inside, and an area that holds no pixel of the raster is refused
in one line naming the file and both extents (``docs/gis.md``, Areas). ``areas --aoi`` counts the
pixels inside, ``predict --aoi`` computes only the tiles that touch the area.
"""

from __future__ import annotations

import os

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from rasterio import Affine  # noqa: E402
from rasterio.features import geometry_mask  # noqa: E402

from bicorseg.errors import InputError  # noqa: E402
from bicorseg.gis.crs import to_pyproj  # noqa: E402
from bicorseg.gis.layers import parse_layer, read_layer, reproject, transformer  # noqa: E402

SEARCH_WINDOW = 1024  # side of the windows searched for a pixel inside the area


def _window_bounds(transform: Affine, row: int, col: int, height: int, width: int) -> tuple[float, ...]:
    """(left, bottom, right, top) of a window (``@``: rasterio's helpers warn under affine 3)."""
    corners = [
        transform @ (c, r)
        for r, c in ((row, col), (row, col + width), (row + height, col), (row + height, col + width))
    ]
    xs, ys = zip(*corners)
    return min(xs), min(ys), max(xs), max(ys)


def _extent(bounds: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"


class AreaOfInterest:
    """Polygons (in the raster's CRS) over the pixel grid of ``transform``."""

    def __init__(self, polygons: np.ndarray, transform: Affine, name: str = "AOI") -> None:
        self.polygons, self.transform, self.name = polygons, transform, name
        self.tree = shapely.STRtree(polygons)

    @classmethod
    def read(
        cls,
        path: str | os.PathLike,
        crs: object,
        transform: Affine,
        raster: str = "the raster",
        shape: tuple[int, int] | None = None,
    ) -> AreaOfInterest:
        """The polygons of the vector layer ``path`` placed on a raster with ``crs`` and ``transform``.

        With the raster's ``shape`` (height, width), an area that holds none of its pixels is refused.
        """
        ref = parse_layer(path, "AOI", allow_remote=None)
        geoms, _, info = read_layer(ref)
        moved = reproject(geoms, transformer(ref, info, to_pyproj(crs, raster), raster), f"AOI: {ref}")
        parts = shapely.get_parts(moved)
        area = cls(parts[~shapely.is_empty(parts)], transform, str(ref))
        if shape is not None:
            area.check_covers(shape, raster)
        return area

    def check_covers(self, shape: tuple[int, int], raster: str) -> None:
        """Refuse an area that holds no pixel centre of a raster of ``shape`` (one line, both extents)."""
        height, width = shape
        if len(self.polygons):
            box = shapely.box(*_window_bounds(self.transform, 0, 0, height, width))
            near = shapely.intersection(shapely.union_all(self.polygons), box)
            if not near.is_empty:  # search the windows over the overlap, stopping at the first pixel
                inv = ~self.transform
                xs, ys = zip(*(inv @ tuple(c) for c in shapely.get_coordinates(shapely.envelope(near))))
                c0, c1 = max(int(np.floor(min(xs))), 0), min(int(np.ceil(max(xs))), width)
                r0, r1 = max(int(np.floor(min(ys))), 0), min(int(np.ceil(max(ys))), height)
                for row in range(r0, r1, SEARCH_WINDOW):
                    for col in range(c0, c1, SEARCH_WINDOW):
                        h, w = min(SEARCH_WINDOW, r1 - row), min(SEARCH_WINDOW, c1 - col)
                        if self.touches(row, col, h, w):
                            return
        found = _extent(tuple(shapely.total_bounds(self.polygons))) if len(self.polygons) else "none"
        extent = _extent(_window_bounds(self.transform, 0, 0, height, width))
        raise InputError(
            f"AOI {self.name} holds no pixel of {raster}: the AOI's extent {found} and the raster's "
            f"{extent} (both in the raster's CRS) do not overlap by a pixel centre"
        )

    def mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """``height x width`` bool: the pixels of the window whose centre is inside a polygon."""
        box = shapely.box(*_window_bounds(self.transform, row, col, height, width))
        near = self.polygons[self.tree.query(box)]  # the polygons whose boxes meet the window's
        if not len(near):
            return np.zeros((height, width), bool)
        window = self.transform @ Affine.translation(col, row)  # the window's own pixel grid
        return geometry_mask(near, (height, width), window, invert=True)

    def touches(self, row: int, col: int, height: int, width: int) -> bool:
        """Whether a pixel of the window is inside."""
        return bool(self.mask(row, col, height, width).any())
