"""The report's truth and error views, its scale bar and coordinates, the convention in sentences and
relative paths, on real GeoTIFFs (EPSG:32633 and EPSG:4326)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine

from bicorseg.cli.main import main
from bicorseg.data.labels import nearest_indices
from bicorseg.demo import DEMO_DATASET
from bicorseg.errors import InputError
from bicorseg.metrics import Convention, EvaluationReport, write_report_json
from bicorseg.report import ReportItem, find_items, report_folder, write_report
from bicorseg.report.truth import CORRECT, WRONG
from tests.helpers.report import ground_width, pictures, write_classes

N = DEMO_DATASET.num_classes


def write_labels(path: Path, labels: np.ndarray, pixel: float = 0.5, **extra) -> Path:
    """A label raster (one band of class indices, or colours), georeferenced like write_classes."""
    labels = labels if labels.ndim == 3 else labels[None]
    profile = dict(driver="GTiff", width=labels.shape[2], height=labels.shape[1], count=labels.shape[0],
                   dtype="uint8", crs="EPSG:32633",
                   transform=Affine(pixel, 0.0, 500_000.0, 0.0, -pixel, 5_000_000.0), **extra)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels)
    return path


@pytest.fixture
def scene(tmp_path):
    """A prediction of 300 x 500 px and its labels: a known confusion, 255 where unlabelled."""
    rng = np.random.default_rng(4)
    predicted = rng.integers(0, N, (300, 500)).astype(np.uint8)
    labels = predicted.copy()
    wrong = rng.random((300, 500)) < 0.3
    labels[wrong] = (predicted[wrong] + 1) % N
    labels[:20] = 255  # unlabelled
    predicted[-10:] = 255  # no prediction (nodata)
    (tmp_path / "out").mkdir()
    write_classes(tmp_path / "out" / "prediction.tif", predicted)
    write_labels(tmp_path / "truth" / "scene.tif", labels)
    return tmp_path, predicted, labels


def test_truth_errors_and_the_confusion_of_every_pixel(scene) -> None:
    tmp_path, predicted, labels = scene
    page = report_folder(tmp_path / "out", labels=tmp_path / "truth", max_size=100).read_text(
        encoding="utf-8"
    )
    keep = (labels != 255) & (predicted != 255)
    expected = np.zeros((N, N), np.int64)
    np.add.at(expected, (labels[keep], predicted[keep]), 1)
    rows = re.findall(r'<tr class="confusion-row">(.*?)</tr>', page)
    assert len(rows) == N
    shown = [
        [int(v.replace(",", "")) for v in re.findall(r"<td[^>]*>([\d,]+)</td>", row)[:N]] for row in rows
    ]
    assert np.array_equal(np.array(shown), expected)  # at full resolution, though the pictures are 1/5
    correct = float(re.search(r'class="correct-share">([\d.]+) %', page).group(1))
    assert correct == pytest.approx(100 * np.trace(expected) / expected.sum(), abs=0.05)

    image_less = pictures(page)  # the prediction (the base), the labels, the errors
    assert len(image_less) == 3 and all(p.size == (100, 60) for p in image_less)
    truth, errors = (np.asarray(p.convert("RGBA")) for p in image_less[1:])
    rows, cols = nearest_indices(300, 60), nearest_indices(500, 100)  # GDAL's nearest decimation
    small_labels, small_pred = labels[np.ix_(rows, cols)], predicted[np.ix_(rows, cols)]
    labelled = small_labels != 255
    assert (truth[..., 3] == np.where(labelled, 255, 0)).all()
    palette = np.asarray(DEMO_DATASET.palette, np.uint8)
    assert (truth[labelled][:, :3] == palette[small_labels[labelled]]).all()
    compared = labelled & (small_pred != 255)
    assert (errors[..., 3] == np.where(compared, 255, 0)).all()
    right = compared & (small_pred == small_labels)
    assert (errors[right][:, :3] == CORRECT).all() and (errors[compared & ~right][:, :3] == WRONG).all()
    assert 'value="truth"' in page and 'value="errors"' in page  # the views to switch to


def test_colour_labels_are_decoded_by_the_class_colours(scene) -> None:
    tmp_path, _, labels = scene
    palette = np.asarray([*DEMO_DATASET.palette, *[(0, 0, 0)] * (256 - N)], np.uint8)
    rgba = np.concatenate([palette[labels].transpose(2, 0, 1), np.where(labels == 255, 0, 255)[None]])
    # unlabelled: transparent (an alpha band)
    colours = write_labels(
        tmp_path / "colours" / "scene.tif", rgba.astype(np.uint8), photometric="RGB", alpha="YES"
    )
    indexed = report_folder(tmp_path / "out", tmp_path / "a.html", labels=tmp_path / "truth").read_text()
    by_colour = report_folder(tmp_path / "out", tmp_path / "b.html", labels=colours).read_text()
    table = re.compile(r'<table class="confusion">.*?</table>')
    assert table.search(by_colour).group(0) == table.search(indexed).group(0)
    bad = rgba.copy()
    bad[:3, 50, 60] = (1, 2, 3)  # a colour of no class
    write_labels(tmp_path / "bad" / "scene.tif", bad, photometric="RGB", alpha="YES")
    with pytest.raises(InputError, match=r"bad/scene\.tif.*\(1, 2, 3\)"):
        report_folder(tmp_path / "out", tmp_path / "c.html", labels=tmp_path / "bad")


def test_labels_that_do_not_fit_are_one_line_errors(scene, capsys) -> None:
    tmp_path, _, labels = scene
    write_labels(tmp_path / "small" / "scene.tif", labels[:100])
    assert main(["report", str(tmp_path / "out"), "--labels", str(tmp_path / "small")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bicorseg report: error: labels ") and "are 500 x 100 px but the prediction" in err
    write_labels(tmp_path / "other" / "elsewhere.tif", labels)
    assert main(["report", str(tmp_path / "out"), "--labels", str(tmp_path / "other")]) == 2
    assert "none of them is named like an input" in capsys.readouterr().err
    write_labels(tmp_path / "two" / "scene.tif", labels)
    Image.fromarray(labels).save(tmp_path / "two" / "scene.png")
    assert main(["report", str(tmp_path / "out"), "--labels", str(tmp_path / "two")]) == 2
    assert "several files for the input scene.tif: scene.png, scene.tif" in capsys.readouterr().err
    shifted = write_labels(tmp_path / "shifted" / "scene.tif", labels)
    with rasterio.open(shifted, "r+") as dst:  # the same size, 10 pixels to the east
        dst.transform = Affine(0.5, 0.0, 500_005.0, 0.0, -0.5, 5_000_000.0)
    assert main(["report", str(tmp_path / "out"), "--labels", str(shifted)]) == 2
    assert "lie on another grid than the prediction" in capsys.readouterr().err
    elsewhere = write_labels(tmp_path / "elsewhere" / "scene.tif", labels)
    with rasterio.open(elsewhere, "r+") as dst:
        dst.crs = "EPSG:32632"
    assert main(["report", str(tmp_path / "out"), "--labels", str(elsewhere)]) == 2
    assert "are in EPSG:32632 (WGS 84 / UTM zone 32N) but the prediction" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.html").exists()


SCALEBAR = re.compile(
    r'<div class="scalebar" style="width: ([\d.]+)%"[^>]*><span class="scale-label">([^<]+)<'
)


def georeference(path: Path, crs: str, transform: Affine) -> Path:
    with rasterio.open(path, "r+") as dst:
        dst.crs, dst.transform = crs, transform
    return path


def test_a_scale_bar_and_coordinates_with_a_crs(tmp_path) -> None:
    utm = write_classes(tmp_path / "prediction.tif", np.zeros((300, 500), np.uint8), pixel=0.5)  # 250 m wide
    page = write_report([ReportItem(utm)], tmp_path / "r.html").read_text()
    share, label = SCALEBAR.search(page).groups()
    # on UTM's central meridian the plane is 0.9996 of the ground: 250 m in the plane are 250.1 m
    assert ground_width(utm) == pytest.approx(250 / 0.9996, rel=1e-6)
    assert label == "50 m" and float(share) == pytest.approx(100 * 50 / ground_width(utm), rel=1e-5)
    assert float(share) != pytest.approx(20.0, rel=1e-5)  # not the plane's 50 of 250 m
    assert "EPSG:32633 (WGS 84 / UTM zone 33N)" in page
    assert (
        "upper-left corner 500,000.00 m, 5,000,000.00 m; lower-right corner 500,250.00 m, 4,999,850.00 m"
        in page
    )
    assert 'data-transform="0.5,0,500000,0,-0.5,5000000" data-size="500,300"' in page
    assert "centre 15.00159° E, 45.15280° N" in page  # pyproj: 500125 E, 4999925 N in UTM 33N

    degrees = write_classes(tmp_path / "degrees.tif", np.zeros((100, 300), np.uint8), crs="EPSG:4326")
    georeference(degrees, "EPSG:4326", Affine(1e-4, 0.0, 13.0, 0.0, -1e-4, 60.0))  # 0.03 degrees wide at 60 N
    page = write_report([ReportItem(degrees)], tmp_path / "d.html").read_text()
    share, label = SCALEBAR.search(page).groups()
    assert 1670 < ground_width(degrees) < 1680
    assert label == "200 m" and float(share) == pytest.approx(100 * 200 / ground_width(degrees), rel=1e-5)
    assert "upper-left corner 13.000000°, 60.000000°" in page and "centre 13.01500° E, 59.99500° N" in page

    # Web Mercator at 60 N: its plane is twice the ground, the bar must not believe it
    mercator = write_classes(tmp_path / "mercator.tif", np.zeros((100, 400), np.uint8), crs="EPSG:3857")
    georeference(mercator, "EPSG:3857", Affine(1.0, 0.0, 1_447_153.0, 0.0, -1.0, 8_399_737.0))
    page = write_report([ReportItem(mercator)], tmp_path / "m.html").read_text()
    share, label = SCALEBAR.search(page).groups()
    assert 195 < ground_width(mercator) < 205  # 400 m in the plane
    assert label == "20 m" and float(share) == pytest.approx(100 * 20 / ground_width(mercator), rel=1e-5)
    assert "ground length of the scene&#x27;s middle row on the WGS 84 ellipsoid" in page

    write_classes(tmp_path / "plain.tif", np.zeros((32, 32), np.uint8), crs=None)
    page = write_report([ReportItem(tmp_path / "plain.tif")], tmp_path / "p.html").read_text()
    assert 'class="scalebar"' not in page and "no CRS: no coordinates and no scale" in page


def test_the_convention_reads_as_sentences_and_paths_are_relative(tmp_path) -> None:
    out = tmp_path / "runs" / "out"
    out.mkdir(parents=True)
    write_classes(out / "prediction.tif", np.zeros((40, 40), np.uint8))
    report = EvaluationReport.from_confusion(
        torch.diag(torch.arange(1, N + 1)) * 10,
        DEMO_DATASET.class_names,
        (0, 1, 2, 3, 4),
        Convention(
            "vaihingen",
            split="test",
            mode="patches",
            tta="d4",
            tta_detail="8 passes",
            protocol="clean",
            extra={"checkpoint": str(tmp_path / "runs" / "model.ckpt"), "precision": "fp32"},
        ),
    )
    write_report_json(report, out / "metrics.json")
    page = report_folder(out).read_text(encoding="utf-8")
    sentences = re.findall(r"<li>(.*?)</li>", re.search(r'<ul class="convention">(.*?)</ul>', page).group(1))
    assert sentences[:4] == [
        "Scored on the split “test” of the dataset “vaihingen”, with its full labels.",
        "The model was applied to patches.",
        "The data were prepared by the clean protocol.",
        "Test-time augmentation d4: 8 passes.",
    ]
    assert (
        "mIoU and mean F1 average 5 classes (bare ground, field, tree, water and road); building is left"
        in page
    )
    assert (
        "The checkpoint was ../model.ckpt." in sentences and "The model ran at fp32 precision." in sentences
    )
    assert "<dt>" not in page and "tta_detail" not in page  # no key: value pairs
    assert str(tmp_path) not in page  # nothing of this machine's folders
    assert "1 scene(s) from ." in page and "<code>prediction.tif</code>" in page
    assert json.loads((out / "metrics.json").read_text())["convention"]["dataset"] == "vaihingen"
    # a page written elsewhere sees the files from where it is
    page = report_folder(out, tmp_path / "pages" / "report.html").read_text(encoding="utf-8")
    assert "1 scene(s) from ../runs/out" in page and "<code>../runs/out/prediction.tif</code>" in page
    assert "The checkpoint was ../runs/model.ckpt." in page and str(tmp_path) not in page


def test_a_paletted_png_label_is_read_as_class_indices(scene) -> None:
    tmp_path, _, labels = scene
    from bicorseg.data.labels import class_map_picture

    (tmp_path / "png").mkdir()
    class_map_picture(labels, DEMO_DATASET.palette).save(tmp_path / "png" / "scene.png")
    assert Image.open(tmp_path / "png" / "scene.png").mode == "P"
    as_png = report_folder(tmp_path / "out", tmp_path / "a.html", labels=tmp_path / "png").read_text()
    as_tif = report_folder(tmp_path / "out", tmp_path / "b.html", labels=tmp_path / "truth").read_text()
    table = re.compile(r'<table class="confusion">.*?</table>')
    assert table.search(as_png).group(0) == table.search(as_tif).group(0)


def test_each_scene_gets_the_labels_of_its_own_input(scene) -> None:
    tmp_path, predicted, _ = scene
    # a class raster sorted first whose input tag names no plain file: it has no image and no labels
    write_classes(tmp_path / "out" / "a_prediction.tif", predicted)
    with rasterio.open(tmp_path / "out" / "a_prediction.tif", "r+") as dst:
        dst.update_tags(bicorseg_input="../elsewhere/other.tif")
    items = find_items(tmp_path / "out", labels=tmp_path / "truth")
    assert [(item.prediction.name, item.labels) for item in items] == [
        ("a_prediction.tif", None),
        ("prediction.tif", tmp_path / "truth" / "scene.tif"),
    ]
