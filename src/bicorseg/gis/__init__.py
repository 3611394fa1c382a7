"""Maps for GIS from class rasters: polygons, per-class areas, QGIS styles (optional extra ``vector``).

* :mod:`.source`: a class raster opened for reading (checks, class names, nodata, windows).
* :mod:`.crs`: areas and lengths in metres for any CRS.
* :mod:`.layers`: vector layers read (QGIS's layer names, CRS, polygons streamed), for AOIs and labels.
* :mod:`.aoi`: :class:`AreaOfInterest`, the pixels of a raster inside polygons.
* :mod:`.polygons`: :func:`vectorize_raster`, windowed polygonisation with seams dissolved.
* :mod:`.areas`: :func:`class_areas`, per-class pixel counts and areas, optionally inside an AOI.
* :mod:`.qml`: :func:`write_qml`, a paletted QGIS style beside a class raster.
* :mod:`.stac`: STAC items in (a checkpoint's bands picked from the assets, stacked into a VRT) and
  out (a STAC Item per class raster); needs the extra ``cloud`` (``pip install "bicorseg[cloud]"``).

Everything but :mod:`.qml` and :mod:`.stac` needs the extra: ``pip install "bicorseg[vector]"``.
"""

from __future__ import annotations

from bicorseg.errors import require_extra

# regions a window of `vectorize` may have (about 3 KiB of memory each): declared here, where the
# command line reads it without importing shapely
DEFAULT_MAX_POLYGONS = 100_000


def require_vector() -> None:
    """Raise a one-line :class:`ConfigError` when the ``vector`` extra is not installed."""
    require_extra(
        "vector", ("shapely", "pyproj", "pyogrio", "pyarrow", "scipy"), "vector output (polygons, areas)"
    )
