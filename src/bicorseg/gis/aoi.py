"""An area of interest on a raster's pixel grid: which windows its polygons touch, which pixels lie inside.

The polygons are read from any OGR format with a CRS and reprojected to the raster's
(:func:`bicorseg.gis.vectorfile.read_polygons`; a file without a CRS is refused). A pixel is inside
when its centre lies inside a polygon (``rasterio.features.geometry_mask``); a window touches the
area when one of its pixels is inside. ``areas --aoi`` counts the pixels inside, ``predict --aoi``
computes only the tiles that touch the area and writes nodata elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from rasterio import Affine  # noqa: E402
from rasterio.features import geometry_mask  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from rasterio.windows import bounds as window_bounds  # noqa: E402
from rasterio.windows import transform as window_transform  # noqa: E402

from bicorseg.gis.crs import to_pyproj  # noqa: E402
from bicorseg.gis.vectorfile import read_polygons  # noqa: E402


class AreaOfInterest:
    """Polygons (in the raster's CRS) over the pixel grid of ``transform``."""

    def __init__(self, polygons: np.ndarray, transform: Affine, name: str = "AOI") -> None:
        self.polygons, self.transform, self.name = polygons, transform, name
        self.tree = shapely.STRtree(polygons)

    @classmethod
    def read(
        cls, path: str | os.PathLike, crs: object, transform: Affine, raster: str = "the raster"
    ) -> AreaOfInterest:
        """The polygons of the vector file ``path`` placed on a raster with ``crs`` and ``transform``."""
        return cls(read_polygons(path, to_pyproj(crs, raster)), transform, str(Path(path)))

    def _near(self, window: Window) -> np.ndarray:
        return self.polygons[self.tree.query(shapely.box(*window_bounds(window, self.transform)))]

    def mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """``height x width`` bool: the pixels of the window whose centre is inside a polygon."""
        window = Window(col, row, width, height)
        near = self._near(window)
        if not len(near):
            return np.zeros((height, width), bool)
        return geometry_mask(near, (height, width), window_transform(window, self.transform), invert=True)

    def touches(self, row: int, col: int, height: int, width: int) -> bool:
        """Whether a pixel of the window is inside (the polygons' boxes are checked first)."""
        if not len(self._near(Window(col, row, width, height))):
            return False
        return bool(self.mask(row, col, height, width).any())
