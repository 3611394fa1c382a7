"""Vector files: stream polygon features into GeoPackage, FlatGeobuf, GeoJSON or GeoParquet; read AOIs.

Features arrive as Arrow record batches (a WKB ``geometry`` column plus attributes) and are written
as they come, so a large output never sits in memory whole: GeoPackage, FlatGeobuf and GeoJSON
through GDAL (``pyogrio.write_arrow``), GeoParquet with ``pyarrow`` (GeoParquet 1.1 metadata, WKB
encoding, the CRS as PROJJSON). The caller wraps the target in :func:`bicorseg.atomic.atomic_output`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import shapely
from pyproj import CRS, Transformer

from bicorseg.errors import ConfigError, InputError, first_line

# format name (predict --vector) -> (file extension, GDAL driver or "parquet")
FORMATS = {
    "gpkg": (".gpkg", "GPKG"),
    "fgb": (".fgb", "FlatGeobuf"),
    "geojson": (".geojson", "GeoJSON"),
    "parquet": (".parquet", "parquet"),
}
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
            pyogrio.write_arrow(
                reader, path, layer=layer, driver=driver, geometry_name="geometry",
                geometry_type="Polygon", crs=crs.to_wkt(),
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


def read_polygons(path: str | os.PathLike, target_crs: CRS, where: str = "AOI") -> np.ndarray:
    """The polygons of a vector file (any OGR format) reprojected to ``target_crs``.

    Vertices are reprojected (edges are not densified). A file without a CRS is refused: it could
    not be placed on the raster without guessing.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{where} {path} does not exist")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True, columns=[])
    except Exception as error:  # pyogrio raises its own DataSourceError / DataLayerError
        raise InputError(f"cannot read {where} {path}: {first_line(error)}") from error
    if wkb is None or not len(wkb):
        raise InputError(f"{where} {path} has no features")
    if not meta.get("crs"):
        raise InputError(f"{where} {path} has no CRS: it cannot be placed on the raster without guessing")
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
