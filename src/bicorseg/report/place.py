"""Where a scene lies, for a raster with a CRS: the CRS, corner and centre coordinates, a scale bar.

The scale bar is a round length (1, 2 or 5 times a power of ten, metres or kilometres) near a fifth
of the scene's width, given as a share of the picture's width so that it stays right at any display
size. Its metres are measured on the ground, whatever the CRS: the scene's middle row is taken to
longitude and latitude at :data:`ROW_POINTS` points and its length summed on the WGS 84 ellipsoid
(so a Web Mercator raster far from the equator gets the true scale, not the inflated one of its
plane). Where PROJ cannot take the CRS to longitude and latitude, a projected CRS is measured in its
plane by its linear unit, and the page says so. The page turns the pointer's position into CRS
coordinates with the raster's transform.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.crs
from rasterio.errors import CRSError
from rasterio.warp import transform as transform_points

WGS84_A = 6_378_137.0  # metres: the WGS 84 ellipsoid's semi-major axis
WGS84_E2 = 6.694_379_990_14e-3  # its first eccentricity squared
ROW_POINTS = 65  # points along the middle row whose segments are measured
NICE_STEPS = (1, 2, 5)


@dataclass
class Place:
    """What a page shows of where a scene lies (see the module docstring)."""

    crs: str  # "EPSG:32633 (WGS 84 / UTM zone 33N)"
    units: str  # of the coordinates: "m", "°", ...
    transform: tuple[float, float, float, float, float, float]  # pixel (col, row) -> CRS x, y
    size: tuple[int, int]  # the raster's width and height in pixels
    corners: tuple[tuple[float, float], tuple[float, float]]  # upper-left and lower-right, CRS x, y
    centre_lonlat: tuple[float, float] | None  # longitude and latitude of the centre
    bar_metres: float
    bar_share: float  # of the picture's width
    scale_note: str  # how the metres were measured


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``limit`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(limit))
    return max(step * power for step in NICE_STEPS if step * power <= limit * (1 + 1e-12))


def crs_label(crs: rasterio.crs.CRS) -> str:
    """``EPSG:32633 (WGS 84 / UTM zone 33N)``; a CRS without an EPSG code by its name alone (never its WKT)."""
    title = re.match(r'^\w+\["([^"]+)"', crs.to_wkt())  # the CRS's own name, first in its WKT
    name = title.group(1) if title else "unnamed CRS"
    code = crs.to_epsg()
    return f"EPSG:{code} ({name})" if code is not None else name


def ground_length(lons: np.ndarray, lats: np.ndarray) -> float:
    """The length in metres of a line through close points on the WGS 84 ellipsoid (each segment
    by the ellipsoid's meridian and prime-vertical radii at its middle latitude)."""
    lam, phi = np.radians(lons), np.radians(lats)
    mid = (phi[1:] + phi[:-1]) / 2
    w = np.sqrt(1 - WGS84_E2 * np.sin(mid) ** 2)
    meridian, normal = WGS84_A * (1 - WGS84_E2) / w**3, WGS84_A / w
    north, east = meridian * np.diff(phi), normal * np.cos(mid) * np.diff(lam)
    return float(np.hypot(north, east).sum())


def _lonlat(crs: rasterio.crs.CRS, xs: list[float], ys: list[float]) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        lons, lats = transform_points(crs, "EPSG:4326", xs, ys)
    except (CRSError, ValueError):  # PROJ has no way from this CRS to longitude and latitude
        return None
    lons, lats = np.asarray(lons, float), np.asarray(lats, float)
    return (lons, lats) if np.isfinite(lons).all() and np.isfinite(lats).all() else None


def _units(crs: rasterio.crs.CRS) -> tuple[str, float | None]:
    """The coordinates' unit and, for a projected CRS, its length in metres (None if unknown)."""
    if crs.is_geographic:
        return "°", None
    try:
        name, factor = crs.linear_units_factor
    except CRSError:
        return "", None
    return ("m" if factor == 1.0 else str(name)), float(factor)


def place_of(src: rasterio.DatasetReader) -> Place | None:
    """The place of an open raster; None without a CRS and a transform, or without a way to measure it."""
    if src.crs is None or src.transform.is_identity:
        return None
    t = src.transform
    width, height = src.width, src.height
    corners = (t @ (0, 0), t @ (width, height))
    label = crs_label(src.crs)
    columns = np.linspace(0, width, ROW_POINTS)
    row = [t @ (c, height / 2) for c in columns]  # the middle row, edge to edge
    centre = t @ (width / 2, height / 2)
    points = _lonlat(src.crs, [p[0] for p in row] + [centre[0]], [p[1] for p in row] + [centre[1]])
    units, factor = _units(src.crs)
    if points is not None:
        lons, lats = points
        scene_metres = ground_length(lons[:-1], lats[:-1])
        lonlat: tuple[float, float] | None = (float(lons[-1]), float(lats[-1]))
        note = "the ground length of the scene's middle row on the WGS 84 ellipsoid"
    elif factor is not None:
        scene_metres = width * math.hypot(t.a, t.d) * factor
        lonlat = None
        note = f"the pixel size in the plane of {label} (its distortion was not checked)"
    else:  # nothing to measure by: a scale would be made up
        return None
    if not scene_metres > 0:
        return None
    bar = nice_length(scene_metres / 5)
    return Place(
        label,
        units,
        tuple(t)[:6],  # type: ignore[arg-type]
        (width, height),
        corners,
        lonlat,
        bar,
        bar / scene_metres,
        f"scale from {note}",
    )
