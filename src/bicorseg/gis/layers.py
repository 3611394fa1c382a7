"""Vector layers read from files: a layer named as QGIS names it, its CRS, its polygons streamed.

The one reader of vector input, for areas of interest and training labels alike. A layer is a local
file in any format GDAL reads (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...), optionally one
layer of it, written as QGIS writes a data source: ``labels.gpkg|layername=roads``
(:func:`parse_layer`); a file of several layers must name one. It is opened through
:func:`bicorseg.raster_access.vector_access`: no network access unless allowed (an OGR VRT whose
sources are remote, or a GeoJSON CRS given as a link, is refused in one line).

Its CRS is required and never guessed, except GeoJSON, whose coordinates RFC 7946 defines as WGS 84
longitude/latitude (GDAL reads them so; one warning says so). Geometries are reprojected by their
vertices (edges are not densified). :class:`PolygonStream` reads the polygons in batches, so memory
does not grow with the layer: points and lines are skipped and counted, invalid polygons repaired
with ``shapely.make_valid`` and counted (or refused, ``strict``), features without a geometry
counted.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bicorseg.gis import require_vector

require_vector()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyogrio  # noqa: E402
import shapely  # noqa: E402
from pyproj import CRS, Transformer  # noqa: E402
from pyproj.exceptions import CRSError, ProjError  # noqa: E402

from bicorseg import raster_access  # noqa: E402
from bicorseg.errors import BicorsegError, BicorsegWarning, ConfigError, InputError, first_line  # noqa: E402

LAYER_SEPARATOR = "|layername="
BATCH_FEATURES = 5_000  # features per batch of the stream: the memory of a read does not grow with the layer
POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon


@dataclass(frozen=True)
class LayerRef:
    """A vector layer: a local file and, for files of several layers, the layer's name.

    ``key`` names it in messages (the parameter that gave it); ``allow_remote`` governs what the
    file refers to (a CRS link): None lets ``BICORSEG_ALLOW_REMOTE`` decide.
    """

    path: Path
    layer: str | None
    key: str
    allow_remote: bool | None = False

    def __str__(self) -> str:
        return f"{self.path}{LAYER_SEPARATOR}{self.layer}" if self.layer else str(self.path)


def parse_layer(text: str | os.PathLike, key: str, allow_remote: bool | None = False) -> LayerRef:
    """``PATH`` or ``PATH|layername=NAME`` (QGIS's notation) as a :class:`LayerRef`; the file must exist."""
    path, _, layer = os.fspath(text).partition(LAYER_SEPARATOR)
    if raster_access.is_remote(path):
        raise ConfigError(f"{text}: vector layers are read from local files only", key=key)
    ref = LayerRef(Path(path).expanduser(), layer or None, key, allow_remote)
    if not ref.path.exists():
        raise InputError(f"{key}: {ref.path} does not exist")
    return ref


def layer_info(ref: LayerRef) -> dict[str, Any]:
    """The layer's CRS, fields, extent and feature count; refuses files GDAL cannot read as vectors,
    files of several layers without a layer name, and layers without a CRS."""
    try:
        with raster_access.vector_access(ref.path, allow_remote=ref.allow_remote) as name:
            names = [str(layer) for layer, _ in pyogrio.list_layers(name)]
            if ref.layer is None and len(names) > 1:
                raise InputError(
                    f"{ref.key}: {ref.path} holds {len(names)} layers ({', '.join(names)}): "
                    f"name one as {ref.path}{LAYER_SEPARATOR}NAME"
                )
            if ref.layer is not None and ref.layer not in names:
                raise InputError(
                    f"{ref.key}: {ref.path} has no layer {ref.layer!r} (layers: {', '.join(names)})"
                )
            info = pyogrio.read_info(name, layer=ref.layer, force_total_bounds=True)
    except BicorsegError:
        raise
    except Exception as error:  # pyogrio raises its own DataSourceError / DataLayerError
        raise InputError(f"{ref.key}: cannot read {ref} as a vector layer: {first_line(error)}") from None
    if not info.get("crs"):
        raise InputError(
            f"{ref.key}: {ref} has no CRS: it cannot be placed on a raster without guessing "
            "(set the layer's CRS in QGIS and save it again)"
        )
    if info.get("driver") == "GeoJSON" and raster_access.geojson_crs(ref.path) is None:
        bounds = info.get("total_bounds")
        if bounds is not None and not (
            -180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90
        ):
            raise InputError(
                f"{ref.key}: {ref} declares no CRS, and its coordinates (x {bounds[0]:g}..{bounds[2]:g}, "
                f"y {bounds[1]:g}..{bounds[3]:g}) are not the longitude/latitude that GeoJSON then means: "
                "save the layer again with its CRS"
            )
        warnings.warn(
            f"{ref.key}: {ref} declares no CRS: read as WGS 84 longitude/latitude, as GeoJSON defines (RFC 7946)",
            BicorsegWarning,
            stacklevel=2,
        )
    return info


def transformer(ref: LayerRef, info: dict[str, Any], target: CRS, target_name: str) -> Transformer | None:
    """The transformer from the layer's CRS to ``target`` (None when they are equal); a CRS pair that
    cannot be transformed is refused (tested on the layer's extent)."""
    try:
        source = CRS.from_user_input(info["crs"])
    except CRSError as error:
        raise InputError(f"{ref.key}: {ref} has a CRS PROJ cannot read ({first_line(error)})") from None
    if source.equals(target):
        return None
    try:
        move = Transformer.from_crs(source, target, always_xy=True)
        if info.get("total_bounds") is not None:  # None: an empty layer
            left, bottom, right, top = info["total_bounds"]
            xs, ys = move.transform([left, right, left, right], [bottom, bottom, top, top])
            if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
                raise ProjError("the layer's extent does not transform")
    except ProjError:
        raise InputError(
            f"{ref.key}: the CRS of {ref} ({source.name}) cannot be transformed to the CRS of "
            f"{target_name} ({target.name})"
        ) from None
    return move


def reproject(geoms: np.ndarray, move: Transformer | None, where: str) -> np.ndarray:
    """Polygons moved by ``move`` (None: as they are); what a curved transformation folds is repaired."""
    if move is None or not len(geoms):
        return geoms
    moved = shapely.transform(geoms, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.get_coordinates(moved)).all():
        raise InputError(
            f"{where}: some polygons cannot be transformed to the rasters' CRS (they lie outside its area of use)"
        )
    invalid = ~shapely.is_valid(moved)
    if invalid.any():
        moved[invalid] = _polygonal_part(shapely.make_valid(moved[invalid]))
    return moved


def batches(
    ref: LayerRef, columns: Sequence[str], where: str | None = None, geometry: bool = True
) -> Iterator[tuple[dict[str, Any], pa.RecordBatch]]:
    """The features of a layer as Arrow batches (with pyogrio's metadata): ``columns``, the fids and,
    with ``geometry``, the geometries, filtered by ``where`` (an OGR SQL ``WHERE`` clause)."""
    with raster_access.vector_environment(allow_remote=ref.allow_remote):
        try:
            with pyogrio.open_arrow(
                ref.path,
                layer=ref.layer,
                where=where,
                columns=list(columns),
                read_geometry=geometry,
                return_fids=True,
                batch_size=BATCH_FEATURES,
                use_pyarrow=True,
            ) as (meta, reader):
                for batch in reader:
                    yield meta, batch
        except BicorsegError:
            raise
        except Exception as error:
            what = f" with the filter {where!r}" if where else ""
            raise InputError(f"{ref.key}: cannot read {ref}{what}: {first_line(error)}") from None


class PolygonStream:
    """The polygons of a layer as batches of ``(fids, geometries, attributes)``, with the counts of
    what was skipped or repaired (:attr:`counts`)."""

    def __init__(
        self, ref: LayerRef, columns: Sequence[str] = (), where: str | None = None, strict: bool = False
    ):
        self.ref, self.columns, self.where, self.strict = ref, list(columns), where, strict
        self.counts: Counter[str] = Counter()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        for meta, batch in batches(self.ref, self.columns, self.where):
            yield self._batch(batch, meta["geometry_name"] or "wkb_geometry", meta["fid_column"] or "OGC_FID")

    def _batch(
        self, batch: pa.RecordBatch, geometry: str, fid: str
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        fids = np.asarray(batch.column(fid).to_numpy(zero_copy_only=False))
        geoms = shapely.from_wkb(batch.column(geometry).to_numpy(zero_copy_only=False))
        attributes = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in self.columns}
        self.counts["features"] += len(geoms)
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        kind = shapely.get_type_id(geoms)
        polygonal = np.isin(kind, POLYGONAL) | (kind == 7)  # collections may hold polygons
        self.counts["no geometry"] += int(missing.sum())
        self.counts["not polygons"] += int((~missing & ~polygonal).sum())
        keep = ~missing & polygonal
        fids, geoms = fids[keep], geoms[keep]
        attributes = {name: values[keep] for name, values in attributes.items()}
        invalid = ~shapely.is_valid(geoms)
        if invalid.any():
            if self.strict:
                first = int(np.flatnonzero(invalid)[0])
                reason = shapely.is_valid_reason(geoms[first])
                raise InputError(
                    f"{self.ref.key}: feature {fids[first]} of {self.ref} is not a valid polygon ({reason}); "
                    f"{int(invalid.sum())} such in this batch (without `strict` they are repaired)"
                )
            geoms[invalid] = shapely.make_valid(geoms[invalid])
            self.counts["repaired"] += int(invalid.sum())
        geoms = _polygonal_part(geoms)
        empty = shapely.is_empty(geoms)
        self.counts["not polygons"] += int(empty.sum())
        return fids[~empty], geoms[~empty], {name: values[~empty] for name, values in attributes.items()}


def _polygonal_part(geoms: np.ndarray) -> np.ndarray:
    """Polygons and multipolygons as they are; of a collection, its polygons (empty when none)."""
    out = geoms.copy()
    for i in np.flatnonzero(shapely.get_type_id(geoms) == 7):
        parts = shapely.get_parts(geoms[i])
        polygons = parts[np.isin(shapely.get_type_id(parts), POLYGONAL)]
        out[i] = shapely.union_all(polygons) if len(polygons) else shapely.Polygon()
    return out


def read_layer(ref: LayerRef, strict: bool = False, what: str = "") -> tuple[np.ndarray, Counter[str], dict]:
    """All polygons of a small layer (an area) as single polygons in its own CRS, the counts of the
    read, and :func:`layer_info`; a layer without a polygon is refused."""
    info = layer_info(ref)
    stream = PolygonStream(ref, strict=strict)
    batches = [geoms for _, geoms, _ in stream]
    geoms = shapely.get_parts(np.concatenate(batches)) if batches else np.empty(0, object)
    if not len(geoms):
        raise InputError(f"{ref.key}: {what + ' ' if what else ''}{ref} holds no polygon")
    return geoms, stream.counts, info
