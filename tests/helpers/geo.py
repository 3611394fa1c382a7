"""Helpers of the GIS training tests: procedural georeferenced scenes and their truth as vector layers.

A scene is the demo's generator (:mod:`bicorseg.demo.scenes`) written as a GeoTIFF in UTM; its truth
mask is vectorised with ``rasterio.features.shapes`` (polygons along pixel edges, so every pixel
centre lies clearly inside or outside) and written to a GeoPackage in another CRS (EPSG:4326 by
default), with the class name in the field ``class``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import shapely
from pyproj import Transformer
from rasterio import Affine
from rasterio.features import shapes

from bicorseg.data.geo.rasters import map_xy
from bicorseg.demo.scenes import DEMO_CRS, DEMO_DATASET, generate_scene, scene_transform, write_scene_geotiff

NAMES = DEMO_DATASET.class_names


def write_scene(folder: Path, size: int = 256, seed: int = 3, name: str = "scene.tif"):
    """A procedural scene as a GeoTIFF in UTM: (path, truth mask, transform)."""
    image, mask = generate_scene(size, seed)
    transform = scene_transform(size, seed)
    path = write_scene_geotiff(folder / name, image, transform)
    return path, mask, transform


def truth_polygons(
    mask: np.ndarray,
    transform: Affine,
    where: np.ndarray | None = None,
    classes: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The truth as polygons in the raster's CRS (pixels of ``where`` only, classes ``classes`` only)."""
    keep = np.ones(mask.shape, bool) if where is None else where.copy()
    if classes is not None:
        keep &= np.isin(mask, classes)
    geoms, values = [], []
    for geojson, value in shapes(mask, mask=keep, connectivity=4, transform=transform):
        geoms.append(shapely.geometry.shape(geojson))
        values.append(int(value))
    return np.array(geoms, dtype=object), np.array(values)


def write_layer(
    path: Path,
    geoms: np.ndarray,
    attributes: dict[str, list],
    crs: str | None = "EPSG:4326",
    source_crs: str = DEMO_CRS,
    layer: str = "labels",
    driver: str = "GPKG",
    geometry_type: str = "Polygon",
) -> Path:
    """Polygons (in ``source_crs``) reprojected to ``crs`` and written with their attributes."""
    if crs is not None and crs != source_crs:
        move = Transformer.from_crs(source_crs, crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])))
    table = pa.table({"geometry": shapely.to_wkb(geoms), **{k: pa.array(v) for k, v in attributes.items()}})
    pyogrio.write_arrow(
        table,
        path,
        layer=layer,
        driver=driver,
        geometry_name="geometry",
        geometry_type=geometry_type,
        crs=crs,
        append=path.exists() and driver == "GPKG",
    )
    return path


def write_truth(
    path: Path,
    mask: np.ndarray,
    transform: Affine,
    where: np.ndarray | None = None,
    classes: tuple[int, ...] | None = None,
    crs: str = "EPSG:4326",
    **options,
) -> Path:
    """The truth polygons as a vector layer with the class name in ``class``."""
    geoms, values = truth_polygons(mask, transform, where, classes)
    return write_layer(path, geoms, {"class": [NAMES[v] for v in values]}, crs=crs, **options)


def pixel_region(transform: Affine, rows: slice, cols: slice) -> shapely.Polygon:
    """A rectangle of pixels as a polygon along their edges, in the raster's CRS."""
    xs, ys = map_xy(
        transform,
        np.array([cols.start, cols.stop, cols.stop, cols.start]),
        np.array([rows.start, rows.start, rows.stop, rows.stop]),
    )
    return shapely.Polygon(np.column_stack([xs, ys]))
