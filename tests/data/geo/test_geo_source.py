"""GIS training source: polygons in another CRS burned onto the rasters' grids, pixel for pixel.

Real files throughout: procedural scenes written as GeoTIFFs in UTM, their truth vectorised into
GeoPackages in EPSG:4326 (tests/helpers/geo.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from bicorseg.data.geo import GeoSource
from bicorseg.data.geo.rasters import map_xy
from bicorseg.errors import ConfigError, InputError
from tests.helpers.geo import NAMES, pixel_region, truth_polygons, write_layer, write_scene, write_truth

SIZE = 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, np.ndarray, object]:
    return write_scene(tmp_path_factory.mktemp("scene"), SIZE, seed=3)


def _whole(source: GeoSource, index: int = 0) -> np.ndarray:
    raster = source.rasters[index]
    return source.read(index, Window(0, 0, raster.width, raster.height))[1]


def _truth_in(source: GeoSource, mask: np.ndarray) -> np.ndarray:
    """The truth mask in the source's class order (classes sorted by name when derived)."""
    return np.array([source.classes.names.index(n) for n in NAMES])[mask]


def test_polygons_in_wgs84_burn_to_the_truth_inside_and_ignore_outside(scene, tmp_path):
    path, mask, transform = scene
    labelled = np.zeros(mask.shape, bool)
    labelled[:, : SIZE * 3 // 5] = True  # partly labelled: the right part has no polygon
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform, where=labelled)
    source = GeoSource([path], labels, label_field="class")
    assert source.classes.names == tuple(sorted(NAMES))  # the distinct names, sorted
    burned = _whole(source)
    truth = _truth_in(source, mask)
    assert np.array_equal(burned[labelled], truth[labelled])
    assert (burned[~labelled] == source.ignore_index).all()
    source.close()


def test_labelled_area_makes_uncovered_pixels_the_background_class(scene, tmp_path):
    path, mask, transform = scene
    area = np.zeros(mask.shape, bool)
    area[32:200, 16:150] = True
    # the polygons of every class but bare ground, inside the area: bare ground is the background
    classes = tuple(i for i, n in enumerate(NAMES) if n != "bare ground")
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform, where=area, classes=classes)
    area_layer = write_layer(
        tmp_path / "area.geojson",
        np.array([pixel_region(transform, slice(32, 200), slice(16, 150))]),
        {"id": [1]},
        crs="EPSG:3857",
        driver="GeoJSON",
    )
    source = GeoSource(
        [path], labels, label_field="class", labelled_area=area_layer, background="bare ground"
    )
    assert source.classes.names[0] == "bare ground"  # the background first, then the codes sorted
    burned = _whole(source)
    truth = _truth_in(source, mask)
    assert np.array_equal(burned[area], truth[area])
    assert (burned[~area] == source.ignore_index).all()


def test_overlaps_resolve_by_priority_then_the_smaller_polygon_and_are_counted(scene, tmp_path):
    path, _, transform = scene
    big = pixel_region(transform, slice(0, 100), slice(0, 100))
    small = pixel_region(transform, slice(20, 40), slice(20, 50))  # 20 x 30 px inside the big one
    layer = write_layer(
        tmp_path / "overlap.gpkg",
        np.array([small, big]),
        {"class": ["building", "field"], "rank": [0, 1]},
        crs="EPSG:32633",
    )
    source = GeoSource([path], layer, label_field="class", classes=["field", "building"])
    burned = _whole(source)
    assert (burned[20:40, 20:50] == 1).all() and (burned[:100, :100] != source.ignore_index).all()
    assert (burned[:100, :100] == 1).sum() == 20 * 30  # the smaller polygon wins, whatever the file order
    _, conflicts = source.labels_for(0, Window(0, 0, SIZE, SIZE), count_conflicts=True)
    assert conflicts == 20 * 30
    ranked = GeoSource(
        [path], layer, label_field="class", classes=["field", "building"], priority_field="rank"
    )
    assert (_whole(ranked)[:100, :100] == 0).all()  # the higher priority wins over the smaller polygon


def test_multipolygons_layer_names_and_attribute_filters(scene, tmp_path):
    path, mask, transform = scene
    geoms, values = truth_polygons(mask, transform)
    water = shapely.MultiPolygon(list(geoms[values == NAMES.index("water")]))
    target = tmp_path / "layers.gpkg"
    write_layer(target, np.array([water]), {"class": ["water"]}, layer="water", geometry_type="MultiPolygon")
    write_layer(
        target, geoms, {"class": [NAMES[v] for v in values], "checked": (values % 2).tolist()}, layer="all"
    )
    with pytest.raises(InputError, match=r"holds 2 layers \(water, all\).*\|layername=NAME"):
        GeoSource([path], target, label_field="class", classes=list(NAMES))
    one = GeoSource([path], f"{target}|layername=water", label_field="class", classes=list(NAMES))
    burned = _whole(one)
    assert np.array_equal(burned != one.ignore_index, mask == NAMES.index("water"))
    odd = GeoSource(
        [path], f"{target}|layername=all", label_field="class", where="checked = 1", classes=list(NAMES)
    )
    burned = _whole(odd)
    assert np.array_equal(burned != odd.ignore_index, mask % 2 == 1)


def test_label_raster_on_a_finer_grid_is_resampled_by_nearest_neighbour(scene, tmp_path):
    path, mask, transform = scene
    crop = mask[40:200, 60:220]  # labels over part of the image only, at twice the resolution
    fine = np.repeat(np.repeat(crop, 2, 0), 2, 1).astype(np.uint8) + 1  # codes 1..6, 0 is nodata
    fine[:10] = 0
    origin = map_xy(transform, 60, 40)
    profile = dict(
        driver="GTiff",
        width=fine.shape[1],
        height=fine.shape[0],
        count=1,
        dtype="uint8",
        nodata=0,
        crs="EPSG:32633",
        transform=rasterio.Affine(0.25, 0, origin[0], 0, -0.25, origin[1]),
    )
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as dst:
        dst.write(fine, 1)
    source = GeoSource([path], tmp_path / "labels.tif", classes=[str(i) for i in range(7)])
    burned = _whole(source)
    expected = np.full(mask.shape, source.ignore_index, np.uint8)
    expected[45:200, 60:220] = mask[45:200, 60:220] + 1  # rows 40..44 lie on the nodata rows
    assert np.array_equal(burned, expected)


def test_nodata_pixels_of_the_image_are_never_labelled_and_hold_the_band_mean(tmp_path):
    path, mask, transform = write_scene(tmp_path, 128, seed=5)
    with rasterio.open(path, "r+") as dst:
        image = dst.read()
        image[:, :, :20] = 0
        dst.write(image)
        dst.nodata = 0
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform)
    source = GeoSource([path], labels, label_field="class")
    image, burned = source.read(0, Window(0, 0, 128, 128))
    assert (burned[:, :20] == source.ignore_index).all()
    assert np.allclose(image[:, :, :20], np.asarray(source.spec.mean)[:, None, None])


def test_raster_statistics_of_16_bit_rasters_come_from_their_pixels(tmp_path):
    path, mask, transform = write_scene(tmp_path, 128, seed=5)
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read().astype(np.uint16) * 40
    profile.update(dtype="uint16", count=4, photometric="MINISBLACK")
    with rasterio.open(tmp_path / "wide.tif", "w", **profile) as dst:
        dst.write(np.concatenate([data, data[:1]]))
    source = GeoSource(
        [tmp_path / "wide.tif"], write_truth(tmp_path / "l.gpkg", mask, transform), label_field="class"
    )
    assert source.spec.bands == ("band1", "band2", "band3", "band4")
    assert source.spec.mean[0] == pytest.approx(float(data[0].mean()), rel=0.05)


# --- checks before any work ---------------------------------------------------------------------


def _square(transform, crs="EPSG:32633"):
    return np.array([pixel_region(transform, slice(10, 50), slice(10, 50))])


def test_a_layer_without_crs_is_refused(scene, tmp_path):
    path, _, transform = scene
    with pytest.warns(UserWarning, match="'crs' was not provided"):  # pyogrio says what the test wants
        layer = write_layer(tmp_path / "nocrs.gpkg", _square(transform), {"class": ["a"]}, crs=None)
    with pytest.raises(InputError, match="has no CRS"):
        GeoSource([path], layer, label_field="class", classes=["a", "b"])


def test_a_geojson_label_layer_is_read_as_an_aoi_is(scene, tmp_path, listener, monkeypatch):
    """One reader for every vector layer: its CRS link needs the network (refused, nothing reached),
    and without a CRS it is WGS 84 longitude/latitude, said in a warning."""
    path, _, transform = scene
    monkeypatch.delenv("BICORSEG_ALLOW_REMOTE", raising=False)
    layer = write_layer(tmp_path / "l.geojson", _square(transform), {"class": ["a"]}, driver="GeoJSON")
    data = json.loads(layer.read_text())
    data.pop("crs", None)
    layer.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"data\.labels: .*l\.geojson declares no CRS: read as WGS 84"):
        GeoSource([path], layer, label_field="class", classes=["a", "b"]).close()
    data["crs"] = {"type": "link", "properties": {"href": listener.url("crs.wkt"), "type": "ogcwkt"}}
    layer.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"l\.geojson: its CRS is a link to .*remote access is off"):
        GeoSource([path], layer, label_field="class", classes=["a", "b"])
    assert listener.close() == 0


def test_a_geojson_without_a_crs_in_projected_coordinates_is_refused_for_what_it_is(scene, tmp_path):
    """Without a CRS, GeoJSON means longitude/latitude; metres of a UTM zone are not read as such."""
    path, _, _ = scene
    square = np.array([shapely.box(500000, 4000000, 500100, 4000100)])
    layer = write_layer(
        tmp_path / "utm.geojson", square, {"class": ["a"]}, crs="EPSG:32633", driver="GeoJSON"
    )
    data = json.loads(layer.read_text())
    data.pop("crs", None)
    layer.write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        GeoSource([path], layer, label_field="class", classes=["a", "b"])
    assert str(caught.value) == (
        f"data.labels: {layer} declares no CRS, and its coordinates (x 500000..500100, y 4e+06..4.0001e+06) "
        "are not the longitude/latitude that GeoJSON then means: save the layer again with its CRS"
    )


def test_a_crs_that_cannot_be_transformed_is_refused(scene, tmp_path):
    path, _, _ = scene
    layer = write_layer(
        tmp_path / "mars.gpkg",
        np.array([shapely.box(0, 0, 1, 1)]),
        {"class": ["a"]},
        crs="IAU_2015:49900",
        source_crs="IAU_2015:49900",
    )
    with pytest.raises(InputError, match=r"Mars.*cannot be transformed to the CRS of .*scene.tif"):
        GeoSource([path], layer, label_field="class", classes=["a", "b"])


def test_labels_overlapping_no_raster_name_the_extents(scene, tmp_path):
    path, _, _ = scene
    layer = write_layer(
        tmp_path / "far.gpkg",
        np.array([shapely.box(2.0, 48.0, 2.1, 48.1)]),
        {"class": ["a"]},
        crs="EPSG:4326",
        source_crs="EPSG:4326",
    )
    with pytest.raises(
        InputError,
        match=r"none of the 1 features .* overlaps a raster: the layer covers x 2..2.1, y 48..48.1 "
        r"\(WGS 84\); the rasters cover .*scene.tif: x \d+\.\.\d+, y ",
    ):
        GeoSource([path], layer, label_field="class", classes=["a", "b"])
    empty = write_layer(tmp_path / "empty.gpkg", np.empty(0, object), {"class": pa.array([], pa.string())})
    with pytest.raises(InputError, match=r"^data\.labels: .*empty\.gpkg holds no polygon$"):
        GeoSource([path], empty, label_field="class", classes=["a", "b"])


def test_a_missing_label_field_names_the_fields(scene, tmp_path):
    path, _, transform = scene
    layer = write_layer(
        tmp_path / "l.gpkg", _square(transform), {"klass": ["a"], "note": ["x"]}, crs="EPSG:32633"
    )
    with pytest.raises(ConfigError, match=r"no field 'class' \(fields: klass, note\)") as error:
        GeoSource([path], layer, label_field="class")
    assert error.value.key == "data.label_field"


def test_codes_outside_the_class_table_are_named(scene, tmp_path):
    path, _, transform = scene
    layer = write_layer(
        tmp_path / "l.gpkg", np.repeat(_square(transform), 3), {"code": [1, 7, 9]}, crs="EPSG:32633"
    )
    table = {
        "classes": [
            {"name": "road", "value": 1, "colour": "#808080"},
            {"name": "roof", "value": 2, "colour": "#ff0000"},
        ]
    }
    with pytest.raises(
        InputError, match=r"code\(s\) 7, 9 are not classes of the class table: road, roof \(values 1, 2\)"
    ):
        GeoSource([path], layer, label_field="code", class_table=table)


def test_a_class_table_whose_codes_are_the_class_indices_names_its_classes(scene, tmp_path):
    """Codes 0..N-1 and N for "not labelled": the table reads as class indices, and the codes still count."""
    path, _, transform = scene
    squares = [pixel_region(transform, slice(r, r + 20), slice(10, 30)) for r in (10, 40, 70)]
    layer = write_layer(tmp_path / "l.gpkg", np.array(squares), {"code": [0, 1, 2]}, crs="EPSG:32633")
    table = {"classes": [{"name": "road", "value": 0}, {"name": "roof", "value": 1}], "ignore_values": [2]}
    source = GeoSource([path], layer, label_field="code", class_table=table)
    burned = _whole(source)
    assert (burned[10:30, 10:30] == 0).all() and (burned[40:60, 10:30] == 1).all()
    assert (burned[70:90, 10:30] == source.ignore_index).all()
    source.close()


def test_invalid_polygons_are_repaired_and_counted_or_refused_when_strict(scene, tmp_path):
    path, _, transform = scene
    xs, ys = map_xy(transform, np.array([10, 60, 60, 10]), np.array([10, 60, 10, 60]))
    bowtie = shapely.Polygon(np.column_stack([xs, ys]))  # self-intersecting
    layer = write_layer(
        tmp_path / "l.gpkg", np.array([bowtie, *_square(transform)]), {"class": ["a", "b"]}, crs="EPSG:32633"
    )
    source = GeoSource([path], layer, label_field="class")
    assert source.labels.counts["repaired"] == 1
    assert "1 invalid, repaired with make_valid" in source.labels.summary()
    with pytest.raises(InputError, match=r"feature 1 of .* is not a valid polygon \(Self-intersection"):
        GeoSource([path], layer, label_field="class", strict=True)


def test_an_empty_labelled_area_is_refused(scene, tmp_path):
    path, mask, transform = scene
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform)
    far = write_layer(
        tmp_path / "area.gpkg",
        np.array([shapely.box(0, 0, 1, 1)]),
        {"id": [1]},
        crs="EPSG:4326",
        source_crs="EPSG:4326",
    )
    with pytest.raises(InputError, match=r"the labelled area .* does not overlap any raster"):
        GeoSource([path], labels, label_field="class", labelled_area=far, background="bare ground")
    empty = write_layer(
        tmp_path / "empty.gpkg", np.empty(0, object), {"id": np.array([], np.int64)}, crs="EPSG:4326"
    )
    with pytest.raises(InputError, match=r"the labelled area .* holds no polygon"):
        GeoSource([path], labels, label_field="class", labelled_area=empty, background="bare ground")


def test_rasters_of_different_bands_or_types_in_one_run_are_refused(scene, tmp_path):
    path, mask, transform = scene
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform)
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(count=1, photometric="MINISBLACK")
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as dst:
        dst.write(data[:1])
    with pytest.raises(InputError, match=r"grey.tif has 1 band\(s\) but .*scene.tif has 3"):
        GeoSource([path, tmp_path / "grey.tif"], labels, label_field="class")
    profile.update(count=3, dtype="uint16", photometric="RGB")
    with rasterio.open(tmp_path / "wide.tif", "w", **profile) as dst:
        dst.write(data.astype(np.uint16))
    with pytest.raises(InputError, match=r"wide.tif is uint16 but .*scene.tif is uint8"):
        GeoSource([path, tmp_path / "wide.tif"], labels, label_field="class")


def test_folders_and_patterns_name_rasters(scene, tmp_path):
    path, mask, transform = scene
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform)
    source = GeoSource([str(path.parent / "*.tif"), path.parent], labels, label_field="class")
    assert [r.path for r in source.rasters] == [path]  # named twice, taken once
    with pytest.raises(InputError, match="no rasters match"):
        GeoSource([str(tmp_path / "nothing*.tif")], labels, label_field="class")


def test_a_raster_whose_name_is_not_utf8_is_skipped_in_a_folder_and_refused_by_name(tmp_path: Path) -> None:
    import os

    from bicorseg.data.geo.rasters import find_rasters

    (tmp_path / "good.tif").write_bytes(b"")
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.tif")
    open(latin1, "wb").close()
    shown = f"{tmp_path}/caf\\xe9.tif"
    with pytest.warns(UserWarning, match=re.escape(f"{shown}: skipped: its name is not UTF-8 text")):
        assert find_rasters([tmp_path]) == [tmp_path / "good.tif"]
    with pytest.warns(UserWarning, match=re.escape(shown)):
        assert find_rasters([str(tmp_path / "*.tif")]) == [tmp_path / "good.tif"]
    with pytest.raises(
        InputError, match=re.escape(f"{shown}: its name is not UTF-8 text, which GDAL cannot open")
    ):
        find_rasters([os.fsdecode(latin1)])
