"""predict --vector: the class raster that predict writes with a tiny model, vectorised beside it."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio

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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tile.gpkg", "tile.qml", "tile.tif", "tile.tif.aux.xml"]
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
