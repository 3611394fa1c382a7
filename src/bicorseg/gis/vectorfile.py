"""Vector files: stream polygon features into GeoPackage, FlatGeobuf, GeoJSON or GeoParquet.

Features arrive as Arrow record batches (a WKB ``geometry`` column plus attributes) and are written
as they come, so a large output never sits in memory whole: GeoPackage, FlatGeobuf and GeoJSON
through GDAL (``pyogrio.write_arrow``), GeoParquet with ``pyarrow`` (GeoParquet 1.1 metadata, WKB
encoding, the CRS as PROJJSON). The caller wraps the target in :func:`bicorseg.atomic.atomic_output`.
GeoJSON in WGS 84 is written as RFC 7946 asks (GDAL's ``RFC7946=YES``; :func:`default_crs` makes
WGS 84 its default), GeoPackage as version 1.2: why, in ``docs/gis.md`` (Polygons, Formats).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyogrio
from pyproj import CRS

from bicorseg.errors import ConfigError, first_line

# format name (predict --vector) -> (file extension, GDAL driver or "parquet")
FORMATS = {
    "gpkg": (".gpkg", "GPKG"),
    "fgb": (".fgb", "FlatGeobuf"),
    "geojson": (".geojson", "GeoJSON"),
    "parquet": (".parquet", "parquet"),
}
GEOJSON_CRS = "OGC:CRS84"  # RFC 7946: WGS 84, longitude then latitude
RASTER_CRS = "raster"  # a `to_crs` that keeps the raster's CRS (for GeoJSON too)
GEOPACKAGE_VERSION = "1.2"
_EXTENSIONS = {ext: driver for ext, driver in FORMATS.values()} | {
    ".json": "GeoJSON",
    ".geoparquet": "parquet",
}


def driver_for(path: str | os.PathLike) -> str:
    """The writer of an output path, from its extension (``ConfigError`` for any other)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ConfigError(
            f"{path}: unknown vector format {suffix or '(no extension)'!r}: use "
            + ", ".join(ext for ext, _ in FORMATS.values())
        )
    return _EXTENSIONS[suffix]


def default_crs(driver: str) -> str | None:
    """The CRS polygons are written in unless asked otherwise: WGS 84 for GeoJSON, else the raster's (None)."""
    return GEOJSON_CRS if driver == "GeoJSON" else None


def write_features(
    path: Path,
    driver: str,
    layer: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    crs: CRS,
) -> None:
    """Write ``batches`` (polygons, WKB column ``geometry``) to ``path`` as they arrive."""
    failure: list[BaseException] = []

    def guarded() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as error:  # GDAL's stream reader would replace it by a RuntimeError
            failure.append(error)
            raise

    try:
        if driver == "parquet":
            _write_geoparquet(path, schema, guarded(), crs)
        else:
            path.unlink(missing_ok=True)  # GDAL creates the file itself
            reader = pa.RecordBatchReader.from_batches(schema, guarded())
            dataset_options, layer_options = {}, {}
            if driver == "GPKG":
                dataset_options["VERSION"] = GEOPACKAGE_VERSION
            if driver == "GeoJSON" and crs.equals(CRS.from_user_input(GEOJSON_CRS), ignore_axis_order=True):
                layer_options["RFC7946"] = "YES"
                crs = CRS.from_user_input(GEOJSON_CRS)
            pyogrio.write_arrow(
                reader, path, layer=layer, driver=driver, geometry_name="geometry",
                geometry_type="Polygon", crs=crs.to_wkt(), dataset_options=dataset_options,
                layer_options=layer_options,
            )  # fmt: skip
    except BaseException as error:
        if failure:
            raise failure[0] from None
        if isinstance(error, Exception):
            raise OSError(f"cannot write {path}: {first_line(error)}") from error
        raise


def _write_geoparquet(path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch], crs: CRS) -> None:
    import pyarrow.parquet as pq

    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs.to_json_dict()}
        },
    }
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
