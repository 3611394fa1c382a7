"""predict --vector: the class raster that predict writes with a tiny model, vectorised beside it."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
from PIL import Image

from bicorseg.cli.main import main
from tests.helpers.inference import CLASSES, random_image, tiny_checkpoint, write_geotiff


@pytest.mark.slow
def test_predict_vector_writes_polygons_that_match_the_class_raster(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    write_geotiff(tmp_path / "in" / "tile.tif", random_image(3, 48, 64), nodata=0)
    argv = [
        "predict",
        str(tmp_path / "in"),
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main([*argv, "--tile", "32", "--vector", "gpkg"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "tile.gpkg",
        "tile.qml",
        "tile.tif",
        "tile.tif.aux.xml",
    ]
    with rasterio.open(tmp_path / "out" / "tile.tif") as src:
        classes = src.read(1)
        pixel_m2 = abs(src.transform.a * src.transform.e)
    meta, _, _, values = pyogrio.raw.read(tmp_path / "out" / "tile.gpkg")
    fields = dict(zip(meta["fields"], values))
    assert "32633" in meta["crs"]
    for class_id in np.unique(classes[classes != 255]):
        mine = fields["class_id"] == class_id
        assert set(fields["class_name"][mine]) == {CLASSES[class_id]}  # names from the raster's tags
    # a random model gives salt and pepper: single pixels keep their outline, so the areas still agree
    total = fields["area_m2"].sum()
    assert abs(total - np.count_nonzero(classes != 255) * pixel_m2) < 0.02 * total
    # rerun: predict skips the finished file and leaves the polygons as they are
    before = (tmp_path / "out" / "tile.gpkg").stat().st_mtime_ns
    assert main([*argv, "--tile", "32", "--vector", "gpkg"]) == 0
    assert (tmp_path / "out" / "tile.gpkg").stat().st_mtime_ns == before
    # polygons missing for a finished file are written
    assert main([*argv, "--tile", "32", "--vector", "fgb", "--quiet"]) == 0
    assert pyogrio.read_info(tmp_path / "out" / "tile.fgb")["crs"] == "EPSG:32633"


def _predict(tmp_path, capsys, inputs, *extra: str) -> tuple[int, str]:
    checkpoint = tmp_path / "tiny.ckpt"
    if not checkpoint.exists():
        tiny_checkpoint(checkpoint)
    argv = ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")]
    code = main([*argv, "--tile", "32", "--quiet", *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["tif", "png"])
def test_predict_vector_refuses_an_input_without_a_crs_before_any_work(tmp_path, capsys, kind):
    good = write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 40, 40))
    if kind == "tif":
        bad = write_geotiff(tmp_path / "in" / "b.tif", random_image(3, 40, 40), crs=None)
    else:
        bad = tmp_path / "in" / "b.png"
        Image.fromarray(random_image(3, 40, 40).transpose(1, 2, 0)).save(bad)
    code, err = _predict(tmp_path, capsys, [good, bad], "--vector", "gpkg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{bad} has no CRS: give --crs (and --pixel-size for a plain picture): polygons need" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing predicted


@pytest.mark.slow
def test_crs_and_pixel_size_georeference_a_plain_pictures_outputs(tmp_path, capsys):
    picture = tmp_path / "in" / "photo.jpg"
    picture.parent.mkdir(parents=True)
    Image.fromarray(random_image(3, 48, 64).transpose(1, 2, 0)).save(picture, quality=95)
    code, err = _predict(
        tmp_path, capsys, [picture], "--vector", "gpkg", "--crs", "EPSG:32633", "--pixel-size", "0.5"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "photo.gpkg", "photo.qml", "photo.tif", "photo.tif.aux.xml"
    ]  # fmt: skip
    with rasterio.open(tmp_path / "out" / "photo.tif") as src:
        assert src.crs.to_epsg() == 32633 and tuple(src.transform)[:6] == (0.5, 0.0, 0.0, 0.0, -0.5, 24.0)
        valid = int((src.read(1) != 255).sum())
    meta, _, _, values = pyogrio.raw.read(tmp_path / "out" / "photo.gpkg")
    fields = dict(zip(meta["fields"], values))
    assert "32633" in meta["crs"] and fields["area_m2"].sum() == pytest.approx(valid * 0.25, rel=0.02)
    # a GeoTIFF without a CRS keeps its own transform and takes the CRS
    write_geotiff(tmp_path / "in2" / "nocrs.tif", random_image(3, 40, 40), crs=None)
    code, err = _predict(tmp_path, capsys, [tmp_path / "in2"], "--crs", "EPSG:3035")
    assert code == 0, err
    with (
        rasterio.open(tmp_path / "out" / "nocrs.tif") as src,
        rasterio.open(tmp_path / "in2" / "nocrs.tif") as raw,
    ):
        assert src.crs.to_epsg() == 3035 and src.transform == raw.transform


def test_pixel_size_without_crs_and_a_bad_crs_are_one_line(tmp_path, capsys):
    image = write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 40, 40))
    code, err = _predict(tmp_path, capsys, [image], "--pixel-size", "0.5")
    assert code == 2 and "--pixel-size: give --crs with it" in err and len(err.strip().splitlines()) == 1
    code, err = _predict(tmp_path, capsys, [image], "--crs", "EPSG:99999999")
    assert code == 2 and "--crs: 'EPSG:99999999' is not a coordinate reference system" in err


def test_a_crs_that_proj_does_not_know_is_one_line_on_the_terminal(tmp_path, capfd):
    image = write_geotiff(tmp_path / "in" / "a.tif", random_image(3, 40, 40))
    code, err = _predict(tmp_path, capfd, [image], "--crs", "EPSG:99999999")  # capfd: GDAL's own stderr too
    assert code == 2 and err.strip().splitlines() == [
        "bicorseg predict: error: --crs: 'EPSG:99999999' is not a coordinate reference system"
    ]
