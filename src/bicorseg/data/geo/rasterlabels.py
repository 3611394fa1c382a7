"""Label rasters of a GIS training source: class codes on any grid, resampled to each image's grid.

A label raster is a single-band raster of integer class codes with a CRS (any CRS, resolution and
extent). Each window of an image is read from it through a GDAL warped view onto the image's grid
with nearest-neighbour resampling (no code is ever interpolated); pixels outside the label raster
and pixels equal to its nodata value are not labelled. Codes name classes as
:mod:`bicorseg.data.geo.classes` says.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from bicorseg import raster_access
from bicorseg.data.geo.classes import GeoClasses
from bicorseg.data.geo.rasters import GeoRaster
from bicorseg.data.labels import LabelTable
from bicorseg.errors import InputError

MAX_CODES = 256  # more distinct values than this is not a class raster


def inspect_label_raster(path: Path) -> Counter[int]:
    """Check a label raster (one integer band, georeferenced) and count its codes (nodata left out),
    block by block."""
    codes: Counter[int] = Counter()
    with raster_access.open_raster(path) as src:
        if src.count != 1:
            raise InputError(
                f"data.labels: {path} has {src.count} bands; a label raster has one band of class codes"
            )
        if np.dtype(src.dtypes[0]).kind not in "ui":
            raise InputError(
                f"data.labels: {path} holds {src.dtypes[0]} values; a label raster holds integer class codes"
            )
        if src.crs is None or src.transform.is_identity:
            raise InputError(f"data.labels: {path} is not georeferenced (no CRS or no transform)")
        with raster_access.reading(path):
            for _, window in src.block_windows(1):
                values = src.read(1, window=window)
                if src.nodata is not None:
                    values = values[values != src.nodata]
                found, counts = np.unique(values, return_counts=True)
                codes.update(dict(zip(found.tolist(), counts.tolist())))
                if len(codes) > MAX_CODES:
                    raise InputError(
                        f"data.labels: {path} holds more than {MAX_CODES} distinct values: not a raster of class codes"
                    )
    return codes


class RasterLabels:
    """Class codes of a label raster, read per image window on the image's grid."""

    def __init__(self, path: Path, classes: GeoClasses, codes: Counter[int]) -> None:
        classes.check_codes(codes, f"data.labels: {path}")
        self.path, self.classes, self.counts = path, classes, codes
        found = {code: classes.index(code) for code in codes}  # every code of the raster: checked above
        self._table = LabelTable("value", found, classes.num_classes, classes.ignore_index) if found else None

    def burn(
        self, raster: GeoRaster, window: Window, fill: int, count_conflicts: bool = False
    ) -> tuple[np.ndarray, int]:
        """The window's classes (``fill`` where the label raster has no code), and 0 conflicts."""
        with (
            rasterio.Env(GDAL_CACHEMAX=raster_access.GDAL_CACHE_BYTES),
            raster_access.open_raster(self.path) as src,
        ):
            with raster_access.reading(self.path):
                with WarpedVRT(
                    src,
                    crs=raster.crs,
                    transform=raster.transform,
                    width=raster.width,
                    height=raster.height,
                    resampling=Resampling.nearest,
                    add_alpha=True,
                ) as view:
                    data = view.read(window=window)
                nodata = src.nodata
        codes, inside = data[0].astype(np.int64), data[1] > 0
        if nodata is not None:
            inside &= codes != int(nodata)
        out = np.full(codes.shape, fill, np.uint8)
        if self._table is not None and inside.any():
            out[inside] = self._table.encode(codes[inside][None], self.path)[0][0]
        return out, 0

    def summary(self) -> str:
        return f"labels {self.path} (raster): {sum(self.counts.values())} labelled pixels on its own grid"
