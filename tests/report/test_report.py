"""``report.html``: self-contained, bounded pictures, per-class areas, heatmaps, metrics, hostile text escaped."""

from __future__ import annotations

import html
import re
import sys

import numpy as np
import pytest
import rasterio
from PIL import Image

from bicorseg.cli.main import main
from bicorseg.demo import DEMO_DATASET, generate_scene
from bicorseg.errors import InputError
from bicorseg.inference import PredictOptions, Predictor, model_info
from bicorseg.report import ReportItem, report_folder, write_report
from tests.helpers.report import SIZE, output_folder, pictures, tiny_model, write_classes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return output_folder(tmp_path_factory.mktemp("report") / "out")


def test_the_page_is_self_contained(folder) -> None:
    page = report_folder(folder).read_text(encoding="utf-8")
    assert (folder / "report.html").is_file()
    # nothing to fetch: no URL, no stylesheet or script file, no font, no CSS url()
    assert not re.search(r"https?://|src=\"//|<link\b|@import|url\(|<script [^>]*src=", page)
    assert "default-src 'none'" in page  # and the page forbids fetching anything itself
    images = pictures(page)
    assert images[0].size == images[1].size == (SIZE, SIZE)  # the scene and the prediction over it
    assert len(images) == 2 + 2 * DEMO_DATASET.num_classes  # and every layer's heatmap of every class
    assert 'type="range" class="opacity"' in page
    for name in DEMO_DATASET.class_names:
        assert f"{name}</td>" in page  # legend and scores name every class
    assert "mIoU" in page and "held-out" in page  # the metrics and their convention


def test_prediction_colours_are_the_palette(folder) -> None:
    page = report_folder(folder, folder / "again.html").read_text(encoding="utf-8")
    with rasterio.open(folder / "prediction.tif") as src:
        classes = src.read(1)
    shown = np.asarray(pictures(page)[1].convert("RGBA"))
    assert np.array_equal(shown[..., :3], np.asarray(DEMO_DATASET.palette, np.uint8)[classes])
    assert (shown[..., 3] == 255).all()


def test_areas_in_hectares_from_every_pixel(tmp_path) -> None:
    classes = np.zeros((300, 400), np.uint8)
    classes[:100] = 5  # building: 40 000 px of 0.25 m2 = 1 ha
    classes[100:110, :] = 255  # nodata counts nowhere
    write_classes(tmp_path / "prediction.tif", classes)
    page = write_report([ReportItem(tmp_path / "prediction.tif")], tmp_path / "r.html").read_text()
    rows = dict(re.findall(r"</span>([^<]+)</td><td>[\d,]+</td><td>[\d.]+ %</td><td>([\d.,]+)</td>", page))
    assert rows["building"] == "1.000"
    assert rows["bare ground"] == f"{(300 - 110) * 400 * 0.25 / 1e4:.3f}"
    assert rows["water"] == "0.000"
    assert "40,000" in page and "116,000" in page  # pixels of building, valid pixels in all


def test_areas_without_the_vector_extra(tmp_path, monkeypatch) -> None:
    classes = np.full((200, 200), 3, np.uint8)
    write_classes(tmp_path / "prediction.tif", classes, pixel=2.0)
    monkeypatch.setitem(sys.modules, "shapely", None)  # as on an install without bicorseg[vector]
    monkeypatch.delitem(sys.modules, "bicorseg.gis.areas", raising=False)
    page = write_report([ReportItem(tmp_path / "prediction.tif")], tmp_path / "r.html").read_text()
    assert "from the pixel size (4 m² per pixel)" in page
    assert "16.000" in page  # 40 000 px of 4 m2 = 16 ha, in the plane


def test_a_projected_crs_of_unknown_units_gets_pixel_counts_only_without_the_vector_extra(
    tmp_path, monkeypatch
) -> None:
    write_classes(tmp_path / "classes.tif", np.full((64, 64), 3, np.uint8), crs=None)
    wkt = (
        'PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Lambert_Azimuthal_Equal_Area"],'
        'PARAMETER["latitude_of_center",52],PARAMETER["longitude_of_center",10],PARAMETER["false_easting",0],'
        'PARAMETER["false_northing",0],UNIT["unknown",1]]'
    )
    (tmp_path / "prediction.vrt").write_text(  # a VRT keeps the CRS as written: its units unknown
        f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{html.escape(wkt)}</SRS>'
        "<GeoTransform>0, 2, 0, 128, 0, -2</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">'
        "classes.tif</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    monkeypatch.setitem(sys.modules, "shapely", None)  # as on an install without bicorseg[vector]
    monkeypatch.delitem(sys.modules, "bicorseg.gis.areas", raising=False)
    page = write_report([ReportItem(tmp_path / "prediction.vrt")], tmp_path / "r.html").read_text()
    assert "pixel counts only: the units of" in page and "are unknown" in page
    assert "area (ha)" not in page and "m² per pixel" not in page
    assert "4,096" in page


def test_a_raster_without_crs_gets_pixel_counts_only(tmp_path) -> None:
    classes = np.ones((64, 64), np.uint8)
    write_classes(tmp_path / "prediction.tif", classes, crs=None)
    page = write_report([ReportItem(tmp_path / "prediction.tif")], tmp_path / "r.html").read_text()
    assert "pixel counts only" in page and "area (ha)" not in page
    assert "4,096" in page


def test_big_rasters_are_decimated_for_display(tmp_path) -> None:
    classes = np.zeros((3000, 5000), np.uint8)
    classes[:, 2500:] = 2
    write_classes(tmp_path / "prediction.tif", classes)
    page = write_report([ReportItem(tmp_path / "prediction.tif")], tmp_path / "r.html", max_size=1000)
    (shown,) = pictures(page.read_text())
    assert shown.size == (1000, 600)  # every 5th pixel: long side within the bound, aspect kept
    assert "areas are counted on every pixel" in page.read_text()
    assert "7,500,000" in page.read_text()  # tree pixels counted at full resolution


def test_text_from_the_files_is_escaped(tmp_path) -> None:
    names = ("<script>alert(1)</script>", *DEMO_DATASET.class_names[1:])
    write_classes(tmp_path / "prediction.tif", np.zeros((32, 32), np.uint8), names=names)
    page = write_report([ReportItem(tmp_path / "prediction.tif")], tmp_path / "r.html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_cli_writes_the_report_of_a_folder(folder, tmp_path, capsys) -> None:
    target = tmp_path / "page.html"
    assert main(["report", str(folder), "--output", str(target), "--max-size", "64"]) == 0
    images = pictures(target.read_text())
    assert images[0].size == (54, 54)  # 160 px decimated by 3 to fit 64
    assert str(target) in capsys.readouterr().err


def test_the_png_map_of_a_plain_picture_is_a_scene(tmp_path) -> None:
    image, _ = generate_scene(SIZE, 11)
    Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "photo.png")
    model = tiny_model()
    predictor = Predictor(model, model_info(model, "tiny"), PredictOptions(tile=SIZE, overlap=0.25))
    result = predictor.predict_file(tmp_path / "photo.png", tmp_path / "out")
    assert result.outputs["class"].name == "photo.png"  # predict's paletted PNG, beside no GeoTIFF
    page = report_folder(tmp_path / "out", images=[tmp_path]).read_text(encoding="utf-8")
    assert "1 scene(s)" in page
    assert [p.size for p in pictures(page)] == [(SIZE, SIZE), (SIZE, SIZE)]  # the picture, its prediction
    for name in DEMO_DATASET.class_names:
        assert f"{name}</td>" in page


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no class raster written by bicorseg predict"),
        (
            lambda d: (d / "metrics.json").write_text("{not json"),
            "metrics.json: unreadable metrics report (invalid JSON",
        ),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, capsys, setup, message) -> None:
    if "JSON" in message:
        write_classes(tmp_path / "prediction.tif", np.zeros((32, 32), np.uint8))
    setup(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_an_existing_page_is_replaced_only_with_overwrite(tmp_path, capsys) -> None:
    folder = output_folder(tmp_path / "out")
    page = folder / "report.html"
    page.write_text("the user's page")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"bicorseg report: error: {page} exists (use --overwrite to replace it)"
    assert page.read_text() == "the user's page"
    assert main(["report", str(folder), "--overwrite"]) == 0
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_an_image_of_another_size_is_refused(tmp_path, folder) -> None:
    write_classes(tmp_path / "prediction.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="is 160 x 160 pixels but its prediction"):
        write_report([ReportItem(tmp_path / "prediction.tif", folder / "scene.tif")], tmp_path / "r.html")
    assert [p.name for p in tmp_path.iterdir()] == ["prediction.tif"]  # nothing half-written
