"""An area of interest on a raster's pixel grid: read from a vector file, the windows its polygons
touch, the pixels inside.

The polygons are read from any OGR format (:func:`read_polygons`, through
:func:`bicorseg.raster_access.vector_access`: no network access unless allowed) and reprojected
to the raster's CRS. The file's CRS is never guessed: a file that declares none is refused,
except GeoJSON, whose coordinates RFC 7946 defines as WGS 84 longitude/latitude (GDAL reads them
so; bicorseg says so in one warning). A pixel is inside when its centre lies inside a polygon
(``rasterio.features.geometry_mask``); a window touches the area when one of its pixels is
inside. An area that holds no pixel of the raster is refused in one line naming the file and both
extents (it would give 0 m2 or a map of nodata). ``areas --aoi`` counts the pixels inside,
``predict --aoi`` computes only the tiles that touch the area and writes nodata elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import pyogrio  # noqa: E402
import shapely  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402
from rasterio import Affine  # noqa: E402
from rasterio.features import geometry_mask  # noqa: E402

from bicorseg.errors import BicorsegError, BicorsegWarning, InputError, first_line  # noqa: E402
from bicorseg.gis.crs import to_pyproj  # noqa: E402
from bicorseg.raster_access import REMOTE_HINT, is_remote, remote_allowed, vector_access  # noqa: E402

# a GeoJSON file is parsed whole up to this size to find a top-level "crs" member; a larger one is
# searched at its start and end, where writers put it
GEOJSON_PARSE_BYTES = 16 * 2**20
_GEOJSON_HEAD_BYTES = 2**20
_CRS_MEMBER = re.compile(rb'"crs"\s*:\s*\{')
SEARCH_WINDOW = 1024  # side of the windows searched for a pixel inside the area


def _geojson_crs(path: Path) -> dict | None:
    """The top-level ``crs`` member of a GeoJSON file (the 2008 form; RFC 7946 has none), None without.

    A file larger than :data:`GEOJSON_PARSE_BYTES` is searched at its start and end (``{}`` when
    a member is found there: it is not parsed).
    """
    size = path.stat().st_size
    if size <= GEOJSON_PARSE_BYTES:
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            return None  # GDAL read it; what it read is all there is
        member = data.get("crs") if isinstance(data, dict) else None
        return member if isinstance(member, dict) else ({} if member is not None else None)
    with open(path, "rb") as stream:
        head = stream.read(_GEOJSON_HEAD_BYTES)
        stream.seek(max(size - _GEOJSON_HEAD_BYTES, 0))
        tail = stream.read()
    return {} if _CRS_MEMBER.search(head) or _CRS_MEMBER.search(tail) else None


def _check_geojson_crs(path: Path, where: str) -> None:
    """Say what is assumed of a GeoJSON file without a CRS; refuse a CRS link GDAL could not follow.

    GDAL reads a GeoJSON file whose CRS link it cannot fetch (remote access off) as WGS 84 without
    a word, so the link is looked at here, decoded as JSON (whatever its spelling in the file).
    """
    member = _geojson_crs(path)
    if member is None:
        warnings.warn(
            f"{where} {path} declares no CRS: read as WGS 84 longitude/latitude, as GeoJSON defines (RFC 7946)",
            BicorsegWarning,
            stacklevel=3,
        )
        return
    properties = member.get("properties")
    href = properties.get("href") if member.get("type") == "link" and isinstance(properties, dict) else None
    if isinstance(href, str) and is_remote(href) and not remote_allowed():
        raise InputError(
            f"{where} {path}: its CRS is a link to {href}, which needs the network; {REMOTE_HINT}"
        )


def read_polygons(path: str | os.PathLike, target_crs: CRS, where: str = "AOI") -> np.ndarray:
    """The polygons of a vector file (any OGR format) reprojected to ``target_crs``.

    Vertices are reprojected (edges are not densified). A file without a CRS is refused (it could
    not be placed on the raster without guessing), except GeoJSON without a ``crs`` member, read as
    WGS 84 longitude/latitude with a warning that says so.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{where} {path} does not exist")
    try:
        with vector_access(path) as name:  # offline unless allowed: OGR VRTs, CRS links, schemas
            driver = pyogrio.read_info(name).get("driver")
            meta, _, wkb, _ = pyogrio.raw.read(name, read_geometry=True, columns=[])
    except BicorsegError:
        raise
    except Exception as error:  # pyogrio raises its own DataSourceError / DataLayerError
        raise InputError(f"cannot read {where} {path}: {first_line(error)}") from error
    if wkb is None or not len(wkb):
        raise InputError(f"{where} {path} has no features")
    if not meta.get("crs"):
        raise InputError(f"{where} {path} has no CRS: it cannot be placed on the raster without guessing")
    if driver == "GeoJSON":
        _check_geojson_crs(path, where)
    geoms = shapely.get_parts(shapely.from_wkb(wkb))
    geoms = geoms[shapely.get_type_id(geoms) == 3]  # polygons
    if not len(geoms):
        raise InputError(f"{where} {path} has no polygons")
    source = CRS.from_user_input(meta["crs"])
    if not source.equals(target_crs):
        transformer = Transformer.from_crs(source, target_crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))
    valid = shapely.get_parts(shapely.make_valid(geoms))
    return valid[shapely.get_type_id(valid) == 3]


def _window_transform(transform: Affine, row: int, col: int) -> Affine:
    return transform @ Affine.translation(col, row)


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
        """The polygons of the vector file ``path`` placed on a raster with ``crs`` and ``transform``.

        With the raster's ``shape`` (height, width), an area that holds none of its pixels is refused.
        """
        target = to_pyproj(crs, raster)
        area = cls(read_polygons(path, target), transform, str(Path(path)))
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

    def _near(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        box = shapely.box(*_window_bounds(self.transform, row, col, height, width))
        return self.polygons[self.tree.query(box)]

    def mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """``height x width`` bool: the pixels of the window whose centre is inside a polygon."""
        near = self._near(row, col, height, width)
        if not len(near):
            return np.zeros((height, width), bool)
        return geometry_mask(near, (height, width), _window_transform(self.transform, row, col), invert=True)

    def touches(self, row: int, col: int, height: int, width: int) -> bool:
        """Whether a pixel of the window is inside (the polygons' boxes are checked first)."""
        if not len(self._near(row, col, height, width)):
            return False
        return bool(self.mask(row, col, height, width).any())
