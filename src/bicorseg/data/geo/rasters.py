"""The rasters of a GIS training source: found, checked once, read in windows.

:func:`find_rasters` turns what the user named (files, folders, glob patterns, URLs and GDAL
``/vsi...`` paths) into a list of inputs; :func:`inspect_rasters` opens each once (through
:func:`bicorseg.raster_access.open_raster`, like every input read) and checks that all are
georeferenced by a transform and share their band count and pixel type. A :class:`GeoRaster` is
plain data (it travels to data-loading worker processes); :meth:`GeoRaster.read` opens the file for
each window, so nothing stays open and memory does not grow with the raster.

Validity of a window's pixels follows prediction (:func:`bicorseg.raster_access.declared_valid`):
the raster's nodata value, alpha band or internal mask, and values that are not finite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from bicorseg import raster_access
from bicorseg.data.io import default_normalisation, find_inputs
from bicorseg.errors import InputError

# what a folder or a glob pattern contributes: georeferenced raster formats (a file named directly
# may be anything GDAL reads)
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class GeoRaster:
    """One input raster as plain data: where it is, its grid and its bands.

    Attributes:
        path: the local file, or a :class:`~bicorseg.raster_access.VsiPath` for a URL.
        crs: the raster's CRS as WKT.
        transform: the affine pixel-to-map transform (north-up or not).
        width, height: size in pixels.
        count: number of bands (all are read, in order).
        dtype: the pixel type of the bands.
        band_names: the band descriptions when every band has a distinct one, else empty.
        masked: some pixels may be invalid (a nodata value, a mask, or floating-point values).
    """

    path: Path | raster_access.VsiPath
    crs: str
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    band_names: tuple[str, ...] = ()
    masked: bool = True

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def footprint(self) -> shapely.Polygon:
        """The raster's outline in its CRS (rotated grids included)."""
        return pixel_polygon(self, 0, 0, self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the raster's CRS."""
        return tuple(self.footprint.bounds)

    @property
    def pixel_size(self) -> float:
        """The larger side of a pixel, in map units."""
        return float(
            max(np.hypot(self.transform.a, self.transform.d), np.hypot(self.transform.b, self.transform.e))
        )

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The window's bands as float32 in input units and its validity (``H x W`` bool).

        Invalid pixels hold the value 0; the caller decides what they become.
        """
        # a bounded block cache: GDAL's default (5 % of the RAM) would fill with a large raster's blocks
        with (
            rasterio.Env(GDAL_CACHEMAX=raster_access.GDAL_CACHE_BYTES),
            raster_access.open_raster(self.path) as src,
        ):
            with raster_access.reading(self.name):
                data = src.read(window=window, out_dtype="float32")
                if not self.masked:  # no nodata value, no mask, integer pixels: every pixel is valid
                    return data, np.ones(data.shape[1:], bool)
                dataset_mask = raster_access.reads_dataset_mask(src)
                valid = raster_access.declared_valid(src, window, data, dataset_mask) & np.isfinite(data).all(
                    0
                )
        data[:, ~valid] = 0.0
        return data, valid


def map_xy(transform: Affine, cols: Any, rows: Any) -> tuple[Any, Any]:
    """Map coordinates of pixel positions (numbers or arrays; ``(0, 0)`` is the top-left corner)."""
    t = transform
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


def window_transform(transform: Affine, window: Window) -> Affine:
    """The transform of a window's own pixel grid."""
    return transform @ Affine.translation(window.col_off, window.row_off)


def pixel_polygon(raster: GeoRaster, row0: float, col0: float, row1: float, col1: float) -> shapely.Polygon:
    """The rectangle of pixel positions ``row0..row1`` x ``col0..col1`` as a polygon in the raster's CRS."""
    xs, ys = map_xy(raster.transform, np.array([col0, col1, col1, col0]), np.array([row0, row0, row1, row1]))
    return shapely.Polygon(np.column_stack([xs, ys]))


def find_rasters(entries: Sequence[str | os.PathLike]) -> list[Path | raster_access.VsiPath]:
    """The rasters named by ``entries``: files, folders, glob patterns (``**`` recursive), URLs and
    ``/vsi...`` paths (:func:`bicorseg.data.io.find_inputs`); folders and patterns contribute files
    with a suffix of :data:`RASTER_SUFFIXES`."""
    return find_inputs(entries, RASTER_SUFFIXES, ("raster", "rasters"), patterns=True)


def inspect_rasters(paths: Sequence[Path | raster_access.VsiPath]) -> list[GeoRaster]:
    """Open each raster once and check it (georeferenced, real-number pixels); all must agree on
    their band count and pixel type."""
    rasters = []
    for path in paths:
        with raster_access.open_raster(path) as src:
            if src.crs is None:
                raise InputError(f"{path}: has no CRS; the labels cannot be placed on it without guessing")
            if src.transform.is_identity:
                how = "only by ground control points: warp it first" if src.gcps[0] else "not by a transform"
                raise InputError(f"{path}: is georeferenced {how} (gdalwarp writes a north-up copy)")
            if np.dtype(src.dtypes[0]).kind not in "uif" or len(set(src.dtypes)) > 1:
                raise InputError(
                    f"{path}: bands of type {', '.join(sorted(set(src.dtypes)))}; give real numbers"
                )
            names = tuple(d.strip() for d in src.descriptions if d and d.strip())
            masked = (
                src.nodata is not None
                or np.dtype(src.dtypes[0]).kind == "f"
                or any(MaskFlags.all_valid not in flags for flags in src.mask_flag_enums)
            )
            rasters.append(
                GeoRaster(
                    path,
                    src.crs.to_wkt(),
                    src.transform,
                    src.width,
                    src.height,
                    src.count,
                    src.dtypes[0],
                    names if len(set(names)) == src.count else (),
                    masked,
                )
            )
    first = rasters[0]
    for raster in rasters[1:]:
        if raster.count != first.count:
            raise InputError(
                f"{raster.name} has {raster.count} band(s) but {first.name} has {first.count}: "
                "the rasters of one run must have the same bands"
            )
        if raster.dtype != first.dtype:
            raise InputError(
                f"{raster.name} is {raster.dtype} but {first.name} is {first.dtype}: "
                "the rasters of one run must have the same pixel type"
            )
    return rasters


def normalisation(
    rasters: Sequence[GeoRaster], windows: int = 64, size: int = 256, seed: int = 0
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """The band names (the first raster's descriptions, else :func:`~bicorseg.data.io.default_normalisation`'s)
    and per-band mean and std (input units) recorded in the spec; statistics that are not ImageNet's
    come from the valid pixels of ``windows`` seeded random windows of ``size`` pixels spread over the
    rasters (at least one per raster), so the cost does not grow with the rasters."""
    first = rasters[0]
    rng = np.random.default_rng(seed)

    def valid_pixels() -> Iterator[np.ndarray]:
        for raster in rasters:
            height, width = min(size, raster.height), min(size, raster.width)
            for _ in range(max(1, windows // len(rasters))):
                row = int(rng.integers(0, raster.height - height + 1))
                col = int(rng.integers(0, raster.width - width + 1))
                data, valid = raster.read(Window(col, row, width, height))
                yield data[:, valid]

    what = f"{first.name} ({windows} windows spread over the rasters)"
    names, mean, std = default_normalisation(first.count, first.dtype, valid_pixels(), what)
    return first.band_names or names, mean, std
