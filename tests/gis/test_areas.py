"""bicorseg areas: exact numbers on hand-made rasters, the ellipsoid for geographic and Mercator CRSs, AOIs."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from bicorseg.cli.main import main
from bicorseg.gis.areas import AreaOptions, class_areas, write_areas
from tests.helpers.gis import ellipsoid_cell_area, files, write_class_raster

ORIGIN = (500_000.0, 5_000_000.0)


def blocks() -> np.ndarray:
    """100 x 100: class 1 top half, class 5 bottom-left 60 columns, class 2 the rest, a nodata block."""
    classes = np.full((100, 100), 2, np.uint8)
    classes[:50] = 1
    classes[50:, :60] = 5
    classes[90:, 90:] = 255  # 100 nodata pixels, inside the class-2 block
    return classes


def test_hand_computable_raster_gives_exact_numbers(tmp_path):
    path = write_class_raster(tmp_path / "b.tif", blocks())
    for window in (16, 2048):  # windowed or whole: the same
        report = class_areas(path, AreaOptions(window=window))
        rows = {row.class_id: row for row in report.classes}
        assert len(rows) == 6  # every class of the tags, present or not
        assert (rows[1].pixels, rows[5].pixels, rows[2].pixels, rows[0].pixels) == (5000, 3000, 1900, 0)
        assert rows[1].area_m2 == 1250.0 and rows[5].area_m2 == 750.0 and rows[2].area_m2 == 475.0
        assert rows[1].area_ha == pytest.approx(0.125)
        assert report.total_pixels == 9900 and report.total_m2 == 2475.0
        assert rows[1].percent == pytest.approx(100 * 5000 / 9900)
        assert rows[2].percent == pytest.approx(100 * 1900 / 9900)
        assert sum(r.percent for r in report.classes) == pytest.approx(100.0)
        assert rows[5].class_name == "building" and "planar" in report.area_method


def test_geographic_raster_near_60_north_matches_the_ellipsoid(tmp_path):
    step = 0.001  # about 56 m x 111 m per pixel; 200 rows span 0.2 degrees of latitude
    classes = np.zeros((200, 150), np.uint8)
    classes[:, 100:] = 3
    classes[150:, :] = 4
    north = 60.1
    path = write_class_raster(
        tmp_path / "g.tif", classes, crs="EPSG:4326", transform=from_origin(10.0, north, step, step)
    )
    report = class_areas(path, AreaOptions(window=64))
    rows = {row.class_id: row for row in report.classes}
    truth_0 = ellipsoid_cell_area(north - 150 * step, north, 100 * step)
    truth_3 = ellipsoid_cell_area(north - 150 * step, north, 50 * step)
    truth_4 = ellipsoid_cell_area(north - 200 * step, north - 150 * step, 150 * step)
    assert rows[0].area_m2 == pytest.approx(truth_0, rel=1e-6)  # well within the 0.5 % asked
    assert rows[3].area_m2 == pytest.approx(truth_3, rel=1e-6)
    assert rows[4].area_m2 == pytest.approx(truth_4, rel=1e-6)
    assert "ellipsoid" in report.area_method
    # pixels shrink towards the pole: the southern rows (class 4) have larger pixels
    assert rows[4].area_m2 / rows[4].pixels > 1.002 * rows[0].area_m2 / rows[0].pixels


def test_web_mercator_is_measured_on_the_ellipsoid_not_in_its_stretched_metres(tmp_path):
    to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y1 = to_merc.transform(10.0, 60.01)
    x1, y0 = to_merc.transform(10.01, 60.0)
    width, height = 100, 100
    transform = from_origin(x0, y1, (x1 - x0) / width, (y1 - y0) / height)
    path = write_class_raster(
        tmp_path / "m.tif", np.ones((height, width), np.uint8), crs="EPSG:3857", transform=transform
    )
    report = class_areas(path)
    truth = ellipsoid_cell_area(60.0, 60.01, 0.01)
    assert report.total_m2 == pytest.approx(truth, rel=2e-3)  # planar Mercator metres would give 4x
    assert "ellipsoid" in report.area_method


def _aoi(path: Path, polygons: list, crs: str, driver: str = "GPKG") -> Path:
    wkb = np.array(shapely.to_wkb(polygons), dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyogrio warns when a file gets no CRS: some tests want that
        pyogrio.raw.write(path, wkb, [], [], geometry_type="Polygon", driver=driver, crs=crs)
    return path


def test_aoi_counts_only_the_pixels_inside(tmp_path):
    path = write_class_raster(tmp_path / "b.tif", blocks())
    x, y = ORIGIN
    left_half = shapely.box(x, y - 50.0, x + 25.0, y)  # columns 0..49 (0.5 m pixels)
    aoi = _aoi(tmp_path / "left.gpkg", [left_half], "EPSG:32633")
    rows = {r.class_id: r for r in class_areas(path, AreaOptions(aoi=aoi, window=16)).classes}
    assert (rows[1].pixels, rows[5].pixels, rows[2].pixels) == (2500, 2500, 0)
    assert rows[1].percent == pytest.approx(50.0)
    # the same half in longitude and latitude (another CRS) is reprojected to the raster's
    to_wgs = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    wgs = shapely.transform(
        shapely.segmentize(left_half, 1.0), lambda c: np.column_stack(to_wgs.transform(c[:, 0], c[:, 1]))
    )
    aoi = _aoi(tmp_path / "left.geojson", [wgs], "EPSG:4326", driver="GeoJSON")
    report = class_areas(path, AreaOptions(aoi=aoi))
    rows = {r.class_id: r for r in report.classes}
    assert (rows[1].pixels, rows[5].pixels, rows[2].pixels) == (2500, 2500, 0)
    assert report.aoi == str(aoi)
    # bottom-right quarter: the class-2 block with its nodata corner
    quarter = _aoi(tmp_path / "q.gpkg", [shapely.box(x + 25.0, y - 50.0, x + 50.0, y - 25.0)], "EPSG:32633")
    report = class_areas(path, AreaOptions(aoi=quarter))
    rows = {r.class_id: r for r in report.classes}
    assert (rows[5].pixels, rows[2].pixels, report.total_pixels) == (500, 1900, 2400)


def test_report_files_and_the_printed_table(tmp_path, capsys):
    path = write_class_raster(tmp_path / "b.tif", blocks())
    assert main(["areas", str(path), "--output", str(tmp_path / "a.csv")]) == 0
    table = capsys.readouterr().out
    assert "building" in table and "3,000" in table and "750.0" in table and "30.30" in table
    with open(tmp_path / "a.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[5] == {"class_id": "5", "class_name": "building", "pixels": "3000", "area_m2": "750.000000",
                       "area_ha": "0.07500000", "percent": f"{100 * 3000 / 9900:.6f}"}  # fmt: skip
    assert main(["areas", str(path), "--output", str(tmp_path / "a.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["total_m2"] == 2475.0 and data["classes"][1]["pixels"] == 5000 and data["crs"] == "EPSG:32633"
    assert capsys.readouterr().out == ""
    # an existing report is kept
    (tmp_path / "a.json").write_text("keep")
    assert main(["areas", str(path), "--output", str(tmp_path / "a.json")]) == 2
    assert "a.json exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert (tmp_path / "a.json").read_text() == "keep"
    assert files(tmp_path) == ["a.csv", "a.json", "b.tif"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_crs_aoi", r"AOI: .*nocrs\.gpkg has no CRS: it cannot be placed on a raster without guessing"),
        ("missing_aoi", r"AOI: .*absent\.gpkg does not exist"),
        ("bad_format", r"areas\.txt: unknown report format '\.txt': use \.json or \.csv"),
        ("float", r"f\.tif has pixel type float32"),
        ("no_crs_raster", r"nocrs\.tif has no CRS: its areas cannot be given in square metres"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, setup, message):
    raster = write_class_raster(tmp_path / "b.tif", blocks())
    argv = ["areas", str(raster), "--output", str(tmp_path / "areas.json")]
    if setup == "no_crs_aoi":
        _aoi(tmp_path / "nocrs.gpkg", [shapely.box(*ORIGIN, ORIGIN[0] + 1, ORIGIN[1] + 1)], None)
        argv += ["--aoi", str(tmp_path / "nocrs.gpkg")]
    elif setup == "missing_aoi":
        argv += ["--aoi", str(tmp_path / "absent.gpkg")]
    elif setup == "bad_format":
        argv[3] = str(tmp_path / "areas.txt")
    elif setup == "float":
        argv[1] = str(write_class_raster(tmp_path / "f.tif", np.zeros((8, 8), np.float32), nodata=None))
    elif setup == "no_crs_raster":
        argv[1] = str(write_class_raster(tmp_path / "nocrs.tif", np.zeros((8, 8), np.uint8), crs=None))
    before = files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("bicorseg areas: error: ")
    assert __import__("re").search(message, err), err
    assert files(tmp_path) == before


def test_write_report_refuses_unknown_formats(tmp_path):
    report = class_areas(write_class_raster(tmp_path / "b.tif", blocks()))
    with pytest.raises(Exception, match="unknown report format"):
        write_areas(report, tmp_path / "r.xlsx")


def test_a_huge_value_in_an_unnamed_int32_raster_is_one_line_not_gigabytes(tmp_path, capsys):
    classes = np.zeros((32, 32), np.int32)
    classes[3, 7] = 2**31 - 1  # counted in a table indexed by class, that is 16 GiB
    path = write_class_raster(tmp_path / "big.tif", classes, nodata=None, names=None)
    assert main(["areas", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pixel value 2147483647 at row 3, column 7 is not a class (0..65535 without class names" in err
    assert "--class-table" in err


def test_a_shipped_class_table_is_given_by_its_name(tmp_path, capsys):
    path = write_class_raster(tmp_path / "b.tif", blocks(), names=None)
    assert main(["areas", str(path), "--class-table", "dubai"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "vegetation" in out and "unlabeled" in out  # classes 3 and 5 of configs/classes/dubai.yaml


def test_land_cover_codes_without_names_are_counted_per_value(tmp_path):
    classes = np.full((20, 20), 523, np.uint16)  # CORINE-like codes
    classes[:5] = 111
    classes[5:, :4] = 65535
    path = write_class_raster(tmp_path / "clc.tif", classes, nodata=None, names=None)
    rows = {row.class_id: row for row in class_areas(path).classes}
    assert sorted(rows) == [111, 523, 65535]
    assert (rows[111].pixels, rows[523].pixels, rows[65535].pixels) == (100, 240, 60)
    assert rows[523].class_name == "class_523"


def test_class_names_are_printed_as_text_never_as_markup(tmp_path, capsys):
    names = ["[bold]field[/bold]", "[/oops]", "a [link=http://x]b[/link]", "c", "d", "e"]
    path = write_class_raster(tmp_path / "m.tif", blocks(), names=tuple(names))
    assert main(["areas", str(path)]) == 0
    table = capsys.readouterr().out
    for name in ("[bold]field[/bold]", "[/oops]", "a [link=http://x]b[/link]"):
        assert name in table


@pytest.mark.parametrize("name", ["field\x1b[2J", "tree\u202e", "a\nb", ""])
def test_class_names_with_control_characters_are_one_line(tmp_path, capsys, name):
    names = ("bare ground", name, "tree", "water", "road", "building")
    path = write_class_raster(tmp_path / "m.tif", blocks(), names=names)
    for command in (["areas", str(path)], ["vectorize", str(path), "--output", str(tmp_path / "o.gpkg")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "\x1b" not in err and "\u202e" not in err
        assert "the tag bicorseg_classes: class 1" in err
    assert files(tmp_path) == ["m.tif"]
