"""Helpers for the GIS tests: real class GeoTIFFs with a real CRS, and ellipsoidal truths computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine, from_origin

UTM = "EPSG:32633"
NAMES = ("bare ground", "field", "tree", "water", "road", "building")
WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563


def write_class_raster(
    path: Path,
    classes: np.ndarray,
    crs: str | None = UTM,
    transform: Affine | None = None,
    nodata: float | None = 255,
    names: tuple[str, ...] | None = NAMES,
    **extra,
) -> Path:
    """A single-band class GeoTIFF like the ones bicorseg predict writes (tags, nodata 255)."""
    transform = transform or from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)
    profile = dict(
        driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1,
        dtype=classes.dtype.name, crs=crs, transform=transform, nodata=nodata,
    )  # fmt: skip
    profile.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes, 1)
        if names is not None:
            dst.update_tags(bicorseg_classes=json.dumps(list(names)))
    return path


def ellipsoid_cell_area(lat1: float, lat2: float, dlon: float) -> float:
    """Exact area (m2) of the WGS 84 cell between two parallels and ``dlon`` degrees of longitude.

    The authalic formula: A = a^2 (1 - e^2) / 2 * dlon * [q(lat2) - q(lat1)], with
    q(phi) = sin(phi) / (1 - e^2 sin^2 phi) + ln((1 + e sin phi) / (1 - e sin phi)) / (2 e).
    """
    e2 = WGS84_F * (2 - WGS84_F)
    e = math.sqrt(e2)

    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return s / (1 - e2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    return WGS84_A**2 * (1 - e2) / 2 * math.radians(dlon) * abs(q(lat2) - q(lat1))


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
