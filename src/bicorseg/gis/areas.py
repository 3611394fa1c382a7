"""Per-class areas of a class raster: pixels, square metres, hectares and percent of the valid area.

:func:`class_areas` reads the raster window by window (bounded memory) and sums, per class, the
pixels and their areas in square metres (:class:`bicorseg.gis.crs.Measure`: one pixel area for
projected CRSs that keep areas, the ellipsoid's area at each pixel centre otherwise). Nodata pixels
count nowhere. With an AOI (polygons in any OGR format, reprojected to the raster's CRS) only pixels
whose centre lies inside a polygon count (``rasterio.features.geometry_mask`` per window). Percent
is of the valid (and inside) area in square metres. :func:`write_areas` writes JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402

from bicorseg.atomic import ensure_writable, write_error, write_text_atomic  # noqa: E402
from bicorseg.defaults import DEFAULT_WINDOW  # noqa: E402
from bicorseg.errors import ConfigError  # noqa: E402
from bicorseg.gis.aoi import AreaOfInterest  # noqa: E402
from bicorseg.gis.crs import Measure, to_pyproj  # noqa: E402
from bicorseg.gis.source import ClassColours, ClassRaster  # noqa: E402

REPORT_FORMATS = (".json", ".csv")


@dataclass
class AreaOptions:
    """Options of :func:`class_areas`."""

    aoi: str | os.PathLike | None = None  # polygons; None = the whole raster
    class_table: ClassColours | None = None  # read by the caller; None = the raster's tags
    window: int = DEFAULT_WINDOW  # pixels (at least 16)


@dataclass
class ClassArea:
    class_id: int
    class_name: str
    pixels: int
    area_m2: float
    area_ha: float
    percent: float


@dataclass
class AreaReport:
    """Per-class areas of one raster (``classes`` in class-id order; percent of ``total_m2``)."""

    raster: str
    crs: str
    area_method: str
    aoi: str | None
    total_pixels: int
    total_m2: float
    total_ha: float
    classes: list[ClassArea] = field(default_factory=list)


def class_areas(path: str | os.PathLike, options: AreaOptions | None = None) -> AreaReport:
    """Pixels, m2, ha and percent of the valid area per class of the class raster ``path``."""
    options = options or AreaOptions()
    with ClassRaster.open(path, options.class_table) as raster:
        src, name = raster.src, str(raster.path)
        measure = Measure.for_extent(src.crs, tuple(src.bounds), name)
        aoi = None
        if options.aoi is not None:
            aoi = AreaOfInterest.read(options.aoi, src.crs, src.transform, name, (src.height, src.width))
        pixels = np.zeros(raster.class_limit, np.int64)  # ClassRaster.read refuses values beyond it
        metres = np.zeros(raster.class_limit, np.float64)
        for window in raster.windows(options.window):
            row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
            data, valid = raster.read(window)
            if aoi is not None:
                valid &= aoi.mask(row, col, h, w)
            values = data[valid].astype(np.int64)
            if not values.size:
                continue
            area = measure.pixel_areas(src.transform, row, col, h, w)
            counts = np.bincount(values, minlength=len(pixels))
            pixels += counts
            if np.ndim(area) == 0:
                metres += counts * float(area)
            else:
                metres += np.bincount(
                    values, weights=np.broadcast_to(area, (h, w))[valid], minlength=len(pixels)
                )
        total_m2 = float(metres.sum())
        ids = range(len(raster.names)) if raster.names is not None else np.nonzero(pixels)[0]
        rows = [
            ClassArea(int(i), raster.name(int(i)), int(pixels[i]), float(metres[i]), float(metres[i]) / 1e4,
                      100.0 * float(metres[i]) / total_m2 if total_m2 > 0 else 0.0)
            for i in ids
        ]  # fmt: skip
        return AreaReport(
            name, to_pyproj(src.crs).to_string(), measure.describe(),
            None if options.aoi is None else str(options.aoi),
            int(pixels.sum()), total_m2, total_m2 / 1e4, rows,
        )  # fmt: skip


def write_areas(report: AreaReport, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the report as JSON (everything) or CSV (one row per class), atomically."""
    output = Path(output)
    check_areas_path(output, overwrite)
    if output.suffix.lower() == ".json":
        text = json.dumps(asdict(report), indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["class_id", "class_name", "pixels", "area_m2", "area_ha", "percent"])
        for row in report.classes:
            writer.writerow([row.class_id, row.class_name, row.pixels, f"{row.area_m2:.6f}", f"{row.area_ha:.8f}",
                             f"{row.percent:.6f}"])  # fmt: skip
        text = buffer.getvalue()
    try:
        return write_text_atomic(output, text)
    except OSError as error:
        raise write_error(output, error) from error


def check_areas_path(output: str | os.PathLike, overwrite: bool) -> None:
    """Refuse a bad report path (its format, a folder, an existing file without ``overwrite``, a folder
    that cannot be written) before any work is done."""
    output = Path(output)
    if output.suffix.lower() not in REPORT_FORMATS:
        raise ConfigError(
            f"{output}: unknown report format {output.suffix or '(no extension)'!r}: use .json or .csv"
        )
    ensure_writable(output, overwrite=overwrite)
