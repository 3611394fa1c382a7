"""Areas and lengths in metres for any CRS, shared by the polygons and the area report.

The rule (:meth:`Measure.for_extent`):

* a **projected** CRS whose areal scale (projected over true area on its ellipsoid, sampled on a
  5 x 5 grid over the extent) stays within 0.5 % of 1 (UTM and most national grids: at most about
  0.2 % inside a UTM zone; equal-area projections: 0) is measured in the plane, in its own units
  converted to metres;
* a **geographic** CRS, or a projection that distorts areas by more than that (Web Mercator: x4 at
  60 degrees), is measured on the CRS's ellipsoid: polygons by
  :meth:`pyproj.Geod.geometry_area_perimeter` (geodesic edges) on their longitudes and latitudes,
  pixels by the ellipsoid's area element ``M N cos(lat) dlat dlon`` at each pixel centre (for a
  projection: times the Jacobian of its inverse, sampled at the centres of 16 x 16 pixel blocks).

Nothing is ever measured in degrees. A raster without a CRS has no metres and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from rasterio.transform import Affine

from bicorseg.errors import ConfigError, InputError

PLANAR_TOLERANCE = 0.005  # largest areal distortion measured in the plane
_SCALE_STEP = 16  # projected CRS on the ellipsoid: areal scale sampled every 16 pixels (block centres)


def to_pyproj(crs: Any, where: str = "crs") -> CRS:
    """A :class:`pyproj.CRS` from a rasterio CRS, a pyproj CRS or any user string (``EPSG:4326``)."""
    try:
        return CRS.from_user_input(crs)  # a rasterio CRS through its to_wkt(), as pyproj reads any
    except CRSError as error:
        raise ConfigError(f"{crs!r} is not a coordinate reference system ({error})", key=where) from None


@dataclass(frozen=True)
class Measure:
    """How areas and lengths of one CRS become square metres and metres."""

    crs: CRS
    method: Literal["planar", "ellipsoid"]
    unit: float  # metres per CRS unit (projected) or radians per CRS unit (geographic)
    geod: Geod
    to_lonlat: Transformer

    @classmethod
    def for_extent(
        cls, crs: Any, bounds: tuple[float, float, float, float], where: str = "the raster"
    ) -> Measure:
        """The measure of ``crs`` over ``bounds`` (left, bottom, right, top) in its units."""
        if crs is None:
            raise InputError(f"{where} has no CRS: its areas cannot be given in square metres")
        horizontal = to_pyproj(crs, where)
        if horizontal.is_compound:  # its horizontal part
            subs = [sub for sub in horizontal.sub_crs_list if sub.is_projected or sub.is_geographic]
            horizontal = subs[0] if subs else horizontal
        if not (horizontal.is_projected or horizontal.is_geographic):
            raise InputError(f"{where}: its CRS {horizontal.name!r} is neither projected nor geographic")
        geod = horizontal.get_geod()
        if geod is None:
            raise InputError(f"{where}: its CRS {horizontal.name!r} has no ellipsoid")
        to_lonlat = Transformer.from_crs(horizontal, horizontal.geodetic_crs, always_xy=True)
        unit = float(horizontal.axis_info[0].unit_conversion_factor)
        measure = cls(horizontal, "ellipsoid", unit, geod, to_lonlat)
        if horizontal.is_geographic:
            return measure
        left, bottom, right, top = bounds
        xs, ys = np.meshgrid(np.linspace(left, right, 5), np.linspace(bottom, top, 5))
        delta = max(abs(right - left), abs(top - bottom), 1.0) * 1e-4
        with np.errstate(all="ignore"):
            scale = measure._areal_scale(xs.ravel(), ys.ravel(), delta)
        if np.isfinite(scale).all() and np.abs(scale - 1.0).max() <= PLANAR_TOLERANCE:
            return replace(measure, method="planar")
        return measure

    def describe(self) -> str:
        """One line for reports: the CRS and how it is measured."""
        name = self.crs.to_string() if self.crs.to_epsg() is None else f"EPSG:{self.crs.to_epsg()}"
        if self.method == "planar":
            return f"planar in {name} ({self.unit:g} m per unit)"
        ellipsoid = self.crs.ellipsoid.name if self.crs.ellipsoid is not None else "its ellipsoid"
        return f"on the ellipsoid {ellipsoid} ({name})"

    # --- polygons -------------------------------------------------------------------------------

    def geometry(self, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Area (m2) and perimeter (m, holes included) of each polygon of ``geoms`` (this CRS)."""
        if self.method == "planar":
            return shapely.area(geoms) * self.unit**2, shapely.length(geoms) * self.unit
        lonlat = shapely.orient_polygons(shapely.transform(geoms, self._lonlat), exterior_cw=False)
        area = np.empty(len(geoms))
        perimeter = np.empty(len(geoms))
        for i, geom in enumerate(lonlat):
            area[i], _ = self.geod.geometry_area_perimeter(geom)
            # pyproj's polygon perimeter is the exterior's alone: the rings are measured as lines
            perimeter[i] = self.geod.geometry_length(geom.boundary)
        return np.abs(area), perimeter

    def _lonlat(self, coords: np.ndarray) -> np.ndarray:
        lon, lat = self.to_lonlat.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    # --- pixels ---------------------------------------------------------------------------------

    def pixel_areas(self, transform: Affine, row_off: int, col_off: int, height: int, width: int) -> Any:
        """Area in m2 of each pixel of a window: a number (planar), ``height x 1`` or ``height x width``."""
        cell = abs(transform.a * transform.e - transform.b * transform.d)
        if self.method == "planar":
            return cell * self.unit**2
        if self.crs.is_geographic:
            if transform.b == 0 and transform.d == 0:  # north-up: one area per row
                rows = row_off + np.arange(height, dtype=float)[:, None] + 0.5
                lat = (transform.e * rows + transform.f) * self.unit
            else:
                rows, cols = np.mgrid[row_off : row_off + height, col_off : col_off + width] + 0.5
                lat = (transform.d * cols + transform.e * rows + transform.f) * self.unit
            return cell * self.unit**2 * self._area_element(lat)
        # a projection that distorts areas: the true area of the pixels, sampled at block centres
        step = _SCALE_STEP
        rows = row_off + np.arange(0, height, step, dtype=float) + min(step, height) / 2
        cols = col_off + np.arange(0, width, step, dtype=float) + min(step, width) / 2
        cc, rr = np.meshgrid(cols, rows)
        xs = transform.a * cc.ravel() + transform.b * rr.ravel() + transform.c  # no affine `*` (deprecated)
        ys = transform.d * cc.ravel() + transform.e * rr.ravel() + transform.f
        scale = self._areal_scale(np.asarray(xs), np.asarray(ys), math.sqrt(cell) / 2).reshape(cc.shape)
        blocks = cell * self.unit**2 / scale
        return np.repeat(np.repeat(blocks, step, axis=0), step, axis=1)[:height, :width]

    def _areal_scale(self, x: np.ndarray, y: np.ndarray, delta: float) -> np.ndarray:
        """Projected area over true area on the ellipsoid at points of a projected CRS.

        The inverse projection's Jacobian (central differences of +-``delta`` CRS units) times the
        ellipsoid's area element; PROJ's own areal scale is not used because some projections (Web
        Mercator) are defined on a sphere and PROJ reports their scale against that sphere.
        """

        def lonlat(dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
            lon, lat = self.to_lonlat.transform(x + dx, y + dy)
            return np.radians(lon), np.radians(lat)

        (lon_xp, lat_xp), (lon_xm, lat_xm) = lonlat(delta, 0), lonlat(-delta, 0)
        (lon_yp, lat_yp), (lon_ym, lat_ym) = lonlat(0, delta), lonlat(0, -delta)
        lat = lonlat(0, 0)[1]
        dlon_x, dlat_x = (lon_xp - lon_xm) / (2 * delta), (lat_xp - lat_xm) / (2 * delta)
        dlon_y, dlat_y = (lon_yp - lon_ym) / (2 * delta), (lat_yp - lat_ym) / (2 * delta)
        true_per_unit2 = np.abs(dlon_x * dlat_y - dlon_y * dlat_x) * self._area_element(lat)
        return self.unit**2 / true_per_unit2

    def _area_element(self, lat: np.ndarray) -> np.ndarray:
        """``M(lat) N(lat) cos(lat)``: square metres per square radian of latitude and longitude."""
        a, e2 = self.geod.a, self.geod.es
        s2 = np.sin(lat) ** 2
        meridian = a * (1 - e2) / (1 - e2 * s2) ** 1.5
        prime_vertical = a / np.sqrt(1 - e2 * s2)
        return meridian * prime_vertical * np.cos(lat)


def pixel_size(transform: Affine) -> float:
    """The side of a square pixel of the same area, in CRS units."""
    return math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
