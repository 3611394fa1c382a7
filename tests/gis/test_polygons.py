"""bicorseg vectorize: areas that agree with the pixels, seams dissolved, fields, formats, CRSs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import CRS
from rasterio.transform import from_origin

from bicorseg.cli.main import main
from bicorseg.data.folder import ClassTable
from bicorseg.demo.scenes import DEMO_DATASET, generate_scene, scene_transform, write_scene_geotiff
from bicorseg.errors import ConfigError, InputError, OutputError
from bicorseg.gis.polygons import VectorizeOptions, vectorize_raster
from tests.helpers.gis import ellipsoid_cell_area, files, write_class_raster


def read_features(path: Path) -> tuple[dict, np.ndarray, dict]:
    """(metadata, shapely polygons, fields) of a written vector file."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        geo = json.loads(table.schema.metadata[b"geo"])
        fields = {name: table.column(name).to_numpy() for name in table.column_names if name != "geometry"}
        crs = CRS.from_json_dict(geo["columns"]["geometry"]["crs"])
        return {"crs": crs, "geo": geo}, shapely.from_wkb(table.column("geometry").to_pylist()), fields
    meta, _, wkb, values = pyogrio.raw.read(path)
    fields = dict(zip(meta["fields"], values))
    return (
        {"crs": CRS.from_user_input(meta["crs"]), "layer": pyogrio.list_layers(path)[0][0]},
        shapely.from_wkb(wkb),
        fields,
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A procedural demo scene's label map (768 px, 0.5 m, UTM 33N), written as bicorseg predict would."""
    _, mask = generate_scene(768, seed=5)
    path = tmp_path_factory.mktemp("scene") / "scene_classes.tif"
    write_scene_geotiff(path, mask, scene_transform(768, 5), palette=DEMO_DATASET.palette)
    with rasterio.open(path, "r+") as dst:
        dst.nodata = 255
        dst.update_tags(bicorseg_classes=json.dumps(list(DEMO_DATASET.class_names)))
    return path, mask


def test_default_simplification_keeps_each_class_area_within_3_percent(scene, tmp_path):
    path, mask = scene
    summary = vectorize_raster(path, tmp_path / "polygons.gpkg")
    assert summary.simplify == pytest.approx(0.75)  # 1.5 pixels of 0.5 m
    _, geoms, fields = read_features(tmp_path / "polygons.gpkg")
    pixel_m2 = np.bincount(mask.ravel(), minlength=6) * 0.25
    unsimplified = 0
    for class_id in range(6):
        mine = fields["class_id"] == class_id
        polygon_m2 = fields["area_m2"][mine].sum()
        assert polygon_m2 == pytest.approx(pixel_m2[class_id], rel=0.03), DEMO_DATASET.class_names[class_id]
        assert set(fields["class_name"][mine]) == {DEMO_DATASET.class_names[class_id]}
        unsimplified += shapely.get_num_coordinates(geoms[mine]).sum()
    # simplification really happened: far fewer vertices than the pixel edges
    exact = vectorize_raster(path, tmp_path / "exact.gpkg", VectorizeOptions(simplify=0))
    _, exact_geoms, exact_fields = read_features(tmp_path / "exact.gpkg")
    assert unsimplified < 0.7 * shapely.get_num_coordinates(exact_geoms).sum()
    for class_id in range(6):  # without simplification the areas are the pixels' exactly
        mine = exact_fields["class_id"] == class_id
        assert exact_fields["area_m2"][mine].sum() == pytest.approx(pixel_m2[class_id], rel=1e-9)
    assert exact.features == len(exact_geoms)
    assert shapely.is_valid(geoms).all() and shapely.is_valid(exact_geoms).all()


def test_polygons_cut_by_window_seams_come_out_whole(scene, tmp_path):
    path, _ = scene
    whole = vectorize_raster(path, tmp_path / "whole.fgb", VectorizeOptions(window=4096, simplify=0))
    tiled = vectorize_raster(path, tmp_path / "tiled.fgb", VectorizeOptions(window=100, simplify=0))
    assert (whole.windows, tiled.windows) == (1, 64)
    _, whole_geoms, whole_fields = read_features(tmp_path / "whole.fgb")
    _, tiled_geoms, tiled_fields = read_features(tmp_path / "tiled.fgb")
    assert tiled.features == whole.features == len(whole_geoms)

    def keyed(geoms, fields):
        return sorted(zip(fields["class_id"].tolist(), shapely.to_wkt(shapely.normalize(geoms)).tolist()))

    assert keyed(tiled_geoms, tiled_fields) == keyed(whole_geoms, whole_fields)  # the same polygons exactly
    # and many of them did cross a seam (100 px windows on a 768 px scene)
    transform = scene_transform(768, 5)
    bounds = shapely.bounds(whole_geoms)
    first, last = ((bounds[:, [0, 2]] - transform.c) / transform.a).T  # pixel columns
    assert (np.floor(first / 100) != np.floor((last - 1e-6) / 100)).sum() > 20


def coverage_faults(geoms: np.ndarray) -> tuple[float, float]:
    """(area of the gaps inside the polygons' extent, area covered twice), in the geometry's units."""
    union = shapely.union_all(geoms)
    overlaps = float(shapely.area(geoms).sum() - union.area)
    gaps = float(shapely.box(*union.bounds).area - union.area)
    return gaps, overlaps


@pytest.mark.parametrize("window", [4096, 64])
def test_simplified_polygons_are_a_coverage_across_window_seams(scene, tmp_path, window):
    """The scene has no nodata: the polygons must tile its extent exactly, edges shared vertex for vertex."""
    path, mask = scene
    summary = vectorize_raster(path, tmp_path / "s.gpkg", VectorizeOptions(window=window))
    assert summary.windows == (1 if window == 4096 else 144)
    _, geoms, fields = read_features(tmp_path / "s.gpkg")
    assert shapely.coverage_is_valid(geoms)  # shared edges have the same vertices on both sides
    assert coverage_faults(geoms) == (0.0, 0.0)
    union = shapely.union_all(geoms)
    assert shapely.equals(union, shapely.box(*shapely.total_bounds(geoms)))
    assert union.area == pytest.approx(768 * 768 * 0.25, rel=1e-12)
    # simplified: fewer vertices than the pixel edges, class totals within 2 % of the pixels
    vectorize_raster(path, tmp_path / "exact.gpkg", VectorizeOptions(window=window, simplify=0))
    _, exact, _ = read_features(tmp_path / "exact.gpkg")
    assert shapely.get_num_coordinates(geoms).sum() < 0.7 * shapely.get_num_coordinates(exact).sum()
    pixel_m2 = np.bincount(mask.ravel(), minlength=6) * 0.25
    for class_id in range(6):
        total = fields["area_m2"][fields["class_id"] == class_id].sum()
        assert total == pytest.approx(pixel_m2[class_id], rel=0.02)


def test_a_coverage_around_nodata_and_left_out_classes(tmp_path):
    _, mask = generate_scene(256, seed=9)
    classes = mask.astype(np.uint8)
    classes[:40, :90] = 255  # nodata across a window seam
    classes[200:, 150:] = 255
    path = write_class_raster(tmp_path / "m.tif", classes)
    vectorize_raster(path, tmp_path / "all.gpkg", VectorizeOptions(window=48))
    _, geoms, fields = read_features(tmp_path / "all.gpkg")
    assert shapely.coverage_is_valid(geoms)
    assert coverage_faults(geoms)[1] == 0.0  # no overlaps
    assert set(fields["class_id"].tolist()) == set(np.unique(classes[classes != 255]).tolist())
    # choosing classes leaves the chosen polygons exactly as they are among all the others
    vectorize_raster(path, tmp_path / "two.gpkg", VectorizeOptions(window=48, classes=["tree", "road"]))
    _, chosen, _ = read_features(tmp_path / "two.gpkg")
    mine = np.isin(fields["class_id"], [2, 4])
    assert sorted(shapely.to_wkt(chosen).tolist()) == sorted(shapely.to_wkt(geoms[mine]).tolist())


def test_min_area_merges_small_regions_into_the_class_around_them_whatever_the_windows(tmp_path):
    classes = np.zeros((64, 64), np.uint8)
    classes[:, 32:] = 1
    classes[10, 10] = classes[40, 50] = 2  # single pixels inside class 0 and class 1
    classes[31:33, 15] = 3  # two pixels across the window seam at row 32 (window 32)
    classes[20, 31:33] = 4  # two pixels across the seam at column 32: 3 neighbours of class 0, 3 of class 1
    classes[50:56, 5:11] = 5  # 36 pixels: kept
    classes[0:3, 60:64] = 255
    classes[1, 62] = 2  # one pixel with only nodata around it: nothing to merge it into
    classes[2, 62] = 255
    path = write_class_raster(tmp_path / "m.tif", classes)
    outputs = []
    for window in (32, 4096):
        out = tmp_path / f"m{window}.gpkg"
        summary = vectorize_raster(path, out, VectorizeOptions(window=window, simplify=0, min_area=0.75))
        assert summary.merge_pixels == 3  # regions of fewer than 3 pixels of 0.25 m2
        outputs.append(read_features(out))
    (_, geoms, fields), (_, whole, whole_fields) = outputs
    assert sorted(zip(fields["class_id"].tolist(), shapely.to_wkt(geoms).tolist())) == sorted(
        zip(whole_fields["class_id"].tolist(), shapely.to_wkt(whole).tolist())
    )
    by_class = {c: fields["area_m2"][fields["class_id"] == c] for c in range(6)}
    assert by_class[3].size == 0 and by_class[4].size == 0  # merged (the tie at the seam: class 0)
    assert by_class[2].tolist() == [0.25]  # only the pixel in the nodata
    assert by_class[5].tolist() == [9.0]
    merged = classes.copy()
    merged[10, 10], merged[31:33, 15], merged[20, 31:33], merged[40, 50] = 0, 0, 0, 1
    for class_id in (0, 1):
        assert by_class[class_id].sum() == (merged == class_id).sum() * 0.25
    assert len(shapely.get_parts(geoms[fields["class_id"] == 0][0].interiors)) == 1  # the block of 5 only
    assert fields["area_m2"].sum() == (classes != 255).sum() * 0.25  # nothing dropped: a coverage


def test_min_area_beyond_a_quarter_of_the_window_is_refused(tmp_path):
    path = write_class_raster(tmp_path / "m.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(ConfigError, match=r"min_area 300 m2 is 1200 pixels .* at most 512 pixels"):
        vectorize_raster(path, tmp_path / "o.gpkg", VectorizeOptions(min_area=300.0))
    assert files(tmp_path) == ["m.tif"]


def test_a_window_with_more_regions_than_the_budget_is_refused_before_polygonising(tmp_path, capsys):
    y, x = np.mgrid[0:64, 0:64]
    path = write_class_raster(tmp_path / "checker.tif", ((y + x) % 2).astype(np.uint8))
    with pytest.raises(InputError, match=r"window at row 0, column 0 \(32 x 32 px\) has 1,024 regions, more "
                                         r"than the 1,000 allowed per window"):  # fmt: skip
        vectorize_raster(path, tmp_path / "c.gpkg", VectorizeOptions(window=32, max_polygons=1000))
    status, _, err = _run(capsys, str(path), "--output", str(tmp_path / "c.gpkg"), "--max-polygons", "500")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "4,096 regions" in err and "--min-area" in err and "--max-polygons" in err
    assert files(tmp_path) == ["checker.tif"]
    # under the budget it goes through: every pixel a polygon
    assert vectorize_raster(path, tmp_path / "c.gpkg", VectorizeOptions(max_polygons=4096)).features == 4096


def test_geojson_is_rfc_7946_unless_the_rasters_crs_is_asked_for(tmp_path):
    classes = np.zeros((40, 40), np.uint8)
    classes[10:20, 10:30] = 4
    path = write_class_raster(tmp_path / "m.tif", classes)
    vectorize_raster(path, tmp_path / "wgs.geojson", VectorizeOptions(simplify=0))
    document = json.loads((tmp_path / "wgs.geojson").read_text())
    assert "crs" not in document
    ring = document["features"][0]["geometry"]["coordinates"][0]
    lon, lat = ring[0]
    assert 14.9 < lon < 15.1 and 45.1 < lat < 45.2  # longitude first
    assert all(len(repr(v).split(".")[-1]) <= 7 for point in ring for v in point)  # RFC 7946's precision
    meta, geoms, fields = read_features(tmp_path / "wgs.geojson")
    assert meta["crs"].to_epsg() == 4326 and shapely.is_valid(geoms).all()
    assert fields["area_m2"][fields["class_id"] == 4][0] == pytest.approx(50.0 / 0.9996**2, rel=2e-4)
    vectorize_raster(path, tmp_path / "utm.geojson", VectorizeOptions(simplify=0, to_crs="raster"))
    document = json.loads((tmp_path / "utm.geojson").read_text())
    assert "32633" in json.dumps(document["crs"])
    assert document["features"][0]["geometry"]["coordinates"][0][0][0] > 500_000


def test_geopackage_is_written_at_version_1_2(tmp_path):
    import sqlite3

    path = write_class_raster(tmp_path / "m.tif", np.zeros((16, 16), np.uint8))
    vectorize_raster(path, tmp_path / "m.gpkg")
    with sqlite3.connect(tmp_path / "m.gpkg") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200


def test_regions_joined_only_through_other_windows_are_one_polygon(tmp_path):
    """A U shape whose arms meet only in the window below, a ring around a seam corner, a diagonal touch."""
    classes = np.zeros((40, 40), np.uint8)
    classes[2:18, 4:8] = 1  # left arm, window (0, 0)
    classes[2:18, 24:28] = 1  # right arm, window (0, 1)
    classes[18:24, 4:28] = 1  # the bottom joining them, windows (1, 0) and (1, 1)
    classes[30:34, 30:34] = 2  # inside window (1, 1): never pending
    classes[19, 35] = 3  # pixels touching only at a corner, across the seam at row 20 and column 35..36
    classes[20, 36] = 3
    classes[33, 10] = 4  # the same inside one window
    classes[34, 11] = 4
    path = write_class_raster(tmp_path / "u.tif", classes)
    for window in (20, 64):
        out = tmp_path / f"u_{window}.gpkg"
        vectorize_raster(path, out, VectorizeOptions(window=window, simplify=0))
        _, geoms, fields = read_features(out)
        u = geoms[fields["class_id"] == 1]
        assert len(u) == 1 and u[0].area == pytest.approx((16 * 4 * 2 + 6 * 24) * 0.25)
        assert len(u[0].interiors) == 0
        assert (fields["class_id"] == 3).sum() == 2  # 4-connectivity: a corner is no connection
        assert (fields["class_id"] == 4).sum() == 2
        background = geoms[fields["class_id"] == 0]
        assert len(background) == 1  # the pocket between the arms opens at the top
        assert len(background[0].interiors) == 6  # the U, the block, the four corner pixels
        assert fields["area_m2"][fields["class_id"] == 1][0] == pytest.approx((128 + 144) * 0.25)
        assert fields["perimeter_m"][fields["class_id"] == 2][0] == pytest.approx(16 * 0.5)


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".geojson", ".parquet"])
def test_every_format_has_the_fields_the_crs_and_valid_polygons(tmp_path, suffix):
    classes = np.full((60, 80), 1, np.uint8)
    classes[10:14, 20:30] = 5  # a 10 x 4 px building: 5 m x 2 m
    classes[40:, :] = 255  # nodata
    path = write_class_raster(tmp_path / "map.tif", classes)
    out = tmp_path / f"map{suffix}"
    summary = vectorize_raster(path, out, VectorizeOptions(simplify=0))
    meta, geoms, fields = read_features(out)
    assert set(fields) == {"class_id", "class_name", "area_m2", "perimeter_m"}
    assert meta["crs"].to_epsg() == (4326 if suffix == ".geojson" else 32633)  # GeoJSON: RFC 7946
    assert shapely.is_valid(geoms).all() and (shapely.get_type_id(geoms) == 3).all()
    assert sorted(zip(fields["class_id"].tolist(), fields["class_name"].tolist())) == [
        (1, "field"),
        (5, "building"),
    ]
    building = fields["class_id"] == 5
    rel = 2e-3 if suffix == ".geojson" else 1e-9  # on the ellipsoid: UTM's scale there is 0.9996..1.0004
    assert fields["area_m2"][building][0] == pytest.approx(10.0, rel=rel)
    assert fields["perimeter_m"][building][0] == pytest.approx(14.0, rel=rel)
    field_area = fields["area_m2"][fields["class_id"] == 1][0]
    assert field_area == pytest.approx(
        40 * 80 * 0.25 - 10.0, rel=rel
    )  # nodata rows excluded, the building a hole
    assert fields["perimeter_m"][fields["class_id"] == 1][0] == pytest.approx(2 * (40 + 20) + 14.0, rel=rel)
    assert summary.features == 2 and summary.classes[5].area_m2 == pytest.approx(10.0, rel=rel)
    if suffix == ".parquet":
        assert meta["geo"]["columns"]["geometry"]["encoding"] == "WKB"
    else:
        assert meta["layer"] == "map"
    assert files(tmp_path) == sorted(["map.tif", out.name])  # no temporary left


def test_geographic_raster_is_measured_on_the_ellipsoid_not_in_degrees(tmp_path):
    step = 1e-4  # degrees: about 5.6 m x 11 m at 60 N
    classes = np.zeros((50, 50), np.uint8)
    classes[10:30, 5:45] = 3
    transform = from_origin(10.0, 60.0 + 50 * step, step, step)
    path = write_class_raster(tmp_path / "geo.tif", classes, crs="EPSG:4326", transform=transform)
    summary = vectorize_raster(path, tmp_path / "geo.gpkg", VectorizeOptions(simplify=0))
    assert "ellipsoid" in summary.area_method and "WGS 84" in summary.area_method
    _, _, fields = read_features(tmp_path / "geo.gpkg")
    water = fields["class_id"] == 3
    top = 60.0 + 40 * step
    truth = ellipsoid_cell_area(top - 20 * step, top, 40 * step)
    assert fields["area_m2"][water][0] == pytest.approx(truth, rel=1e-4)
    assert 4e4 < truth < 6e4  # about 222 m x 223 m in square metres, not 8e-6 square degrees
    # perimeter: two meridian arcs and two parallel arcs, by hand on the sphere-free formulas
    assert fields["perimeter_m"][water][0] == pytest.approx(
        2 * (20 * step * 111_412) + 2 * (40 * step * 55_800), rel=2e-3
    )


def test_to_crs_reprojects_and_keeps_true_areas(tmp_path):
    classes = np.zeros((100, 100), np.uint8)
    classes[20:80, 20:60] = 4
    path = write_class_raster(tmp_path / "m.tif", classes)
    vectorize_raster(path, tmp_path / "utm.geojson", VectorizeOptions(simplify=0, to_crs="raster"))
    vectorize_raster(path, tmp_path / "wgs.geojson", VectorizeOptions(simplify=0, to_crs="EPSG:4326"))
    _, _, utm_fields = read_features(tmp_path / "utm.geojson")
    meta, wgs, wgs_fields = read_features(tmp_path / "wgs.geojson")
    assert meta["crs"].to_epsg() == 4326
    minx, miny, maxx, maxy = shapely.total_bounds(wgs)
    assert 14.9 < minx < maxx < 15.1 and 45.1 < miny < maxy < 45.2  # UTM 33N, 500 km E, 5000 km N
    road = utm_fields["class_id"] == 4
    assert utm_fields["area_m2"][road][0] == pytest.approx(600.0)
    # the same road on the ellipsoid: UTM's scale factor 0.9996 at the central meridian -> 0.08 % smaller grid
    assert wgs_fields["area_m2"][wgs_fields["class_id"] == 4][0] == pytest.approx(600.0 / 0.9996**2, rel=2e-4)


def test_classes_and_nodata(tmp_path):
    classes = np.zeros((64, 64), np.uint8)
    classes[5:7, 5:7] = 5  # 1 m2
    classes[20:40, 20:40] = 5  # 100 m2
    classes[50:60, 10:20] = 2  # 25 m2
    classes[0:3, 50:64] = 255
    path = write_class_raster(tmp_path / "m.tif", classes)
    vectorize_raster(path, tmp_path / "a.gpkg", VectorizeOptions(classes=["building", "2"], simplify=0))
    _, _, fields = read_features(tmp_path / "a.gpkg")
    assert sorted(zip(fields["class_id"].tolist(), fields["area_m2"].tolist())) == [
        (2, 25.0),
        (5, 1.0),
        (5, 100.0),
    ]
    vectorize_raster(path, tmp_path / "b.gpkg", VectorizeOptions(simplify=0, classes=[0]))
    _, _, fields = read_features(tmp_path / "b.gpkg")
    assert fields["area_m2"].sum() == pytest.approx((64 * 64 - 4 - 400 - 100 - 42) * 0.25)


def test_class_names_from_a_class_table_and_generic_names_without(tmp_path):
    classes = np.zeros((32, 32), np.uint8)
    classes[8:16, 8:16] = 4
    table = Path(__file__).resolve().parents[2] / "configs" / "classes" / "dubai.yaml"
    path = write_class_raster(tmp_path / "m.tif", classes, names=None)
    vectorize_raster(path, tmp_path / "t.gpkg", VectorizeOptions(class_table=ClassTable.from_yaml(table)))
    _, _, fields = read_features(tmp_path / "t.gpkg")
    assert sorted(set(fields["class_name"].tolist())) == ["building", "water"]
    vectorize_raster(path, tmp_path / "g.gpkg")
    _, _, fields = read_features(tmp_path / "g.gpkg")
    assert sorted(set(fields["class_name"].tolist())) == ["class_0", "class_4"]


def test_small_polygons_keep_their_pixel_area_under_default_simplification(tmp_path):
    classes = np.zeros((40, 40), np.uint8)
    classes[5, 5] = 2  # one pixel: simplified, it would be a triangle of half its area
    classes[10, 10:12] = 2  # a domino
    classes[20:23, 20] = 2
    classes[30:33, 30:33] = 2
    classes[31, 31] = 0  # a ring
    path = write_class_raster(tmp_path / "m.tif", classes)
    summary = vectorize_raster(path, tmp_path / "m.gpkg")
    _, geoms, fields = read_features(tmp_path / "m.gpkg")
    tree = fields["class_id"] == 2
    assert sorted(fields["area_m2"][tree].tolist()) == [0.25, 0.5, 0.75, 2.0]
    assert summary.unsimplified >= 1 and shapely.is_valid(geoms).all()


def test_a_bad_value_in_a_late_window_leaves_no_output(tmp_path):
    classes = np.zeros((64, 64), np.uint8)
    classes[60, 60] = 9  # not one of the 6 classes in the tags; in the last window
    path = write_class_raster(tmp_path / "m.tif", classes)
    with pytest.raises(InputError, match=r"pixel value 9 at row 60, column 60 is not a class"):
        vectorize_raster(path, tmp_path / "out.gpkg", VectorizeOptions(window=16))
    assert files(tmp_path) == ["m.tif"]


# --- the command line ------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["vectorize", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_writes_polygons_and_a_summary(tmp_path, capsys):
    classes = np.zeros((32, 32), np.uint8)
    classes[:16] = 1
    path = write_class_raster(tmp_path / "m.tif", classes)
    status, _, err = _run(capsys, str(path), "--output", str(tmp_path / "m.gpkg"), "--simplify", "0")
    assert status == 0 and "2 polygon(s)" in err and "field" in err
    assert pyogrio.read_info(tmp_path / "m.gpkg")["features"] == 2


def _float_raster(d: Path) -> Path:
    return write_class_raster(d / "f.tif", np.zeros((16, 16), np.float32), nodata=None)


def _two_bands(d: Path) -> Path:
    path = d / "rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=2, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_000_000, 1, 1)) as dst:  # fmt: skip
        dst.write(np.zeros((2, 16, 16), np.uint8))
    return path


def _text(d: Path) -> Path:
    (d / "notes.tif").write_text("not a raster\n")
    return d / "notes.tif"


def _no_crs(d: Path) -> Path:
    return write_class_raster(d / "nocrs.tif", np.zeros((16, 16), np.uint8), crs=None)


def _good(d: Path) -> Path:
    return write_class_raster(d / "good.tif", np.zeros((16, 16), np.uint8))


@pytest.mark.parametrize(
    ("make", "extra", "output", "message"),
    [
        (_text, [], "out.gpkg", r"cannot read .*notes\.tif: not an image or raster GDAL can open"),
        (
            _float_raster,
            [],
            "out.gpkg",
            r"f\.tif has pixel type float32: a class raster holds integer class indices",
        ),
        (_two_bands, [], "out.gpkg", r"rgb\.tif has 2 bands: a class raster has one band"),
        (_no_crs, [], "out.gpkg", r"nocrs\.tif has no CRS"),
        (
            _good,
            ["--classes", "forest"],
            "out.gpkg",
            r"error: --classes: unknown class 'forest' \(class names: bare ground, field",
        ),
        (_good, ["--classes", "7"], "out.gpkg", r"error: --classes: 7 is not a class id \(0\.\.5\)"),
        (
            _good,
            [],
            "out.shp",
            r"out\.shp: unknown vector format '\.shp': use \.gpkg, \.fgb, \.geojson, \.parquet",
        ),
        (
            _good,
            ["--to-crs", "EPSG:99999999"],
            "out.gpkg",
            r"error: --to-crs: 'EPSG:99999999' is not a coordinate reference",
        ),
        (_good, ["--simplify", "-1"], "out.gpkg", r"simplify must be 0 or more"),
        (_good, ["--window", "8"], "out.gpkg", r"window must be at least 16 pixels, got 8"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, make, extra, output, message):
    path = make(tmp_path)
    before = files(tmp_path)
    status, _, err = _run(capsys, str(path), "--output", str(tmp_path / output), *extra)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("bicorseg vectorize: error: ")
    assert __import__("re").search(message, err), err
    assert files(tmp_path) == before


def test_cli_refuses_to_replace_an_output_without_overwrite(tmp_path, capsys):
    path = _good(tmp_path)
    (tmp_path / "out.gpkg").write_bytes(b"precious")
    status, _, err = _run(capsys, str(path), "--output", str(tmp_path / "out.gpkg"))
    assert status == 2 and "out.gpkg exists (use --overwrite to replace it)" in err
    assert (tmp_path / "out.gpkg").read_bytes() == b"precious"
    assert _run(capsys, str(path), "--output", str(tmp_path / "out.gpkg"), "--overwrite")[0] == 0
    assert pyogrio.read_info(tmp_path / "out.gpkg")["features"] == 1


def test_missing_extra_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    path = _good(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "pyogrio", None)  # as if it were not installed
    for command in (["vectorize", str(path), "--output", str(tmp_path / "o.gpkg")], ["areas", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith('pip install "bicorseg[vector]"') and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError):
        __import__("bicorseg.gis", fromlist=["require_vector"]).require_vector()
    assert files(tmp_path) == ["good.tif"]


def test_existing_output_error_type(tmp_path):
    path = _good(tmp_path)
    (tmp_path / "o.fgb").write_bytes(b"x")
    with pytest.raises(OutputError):
        vectorize_raster(path, tmp_path / "o.fgb")
