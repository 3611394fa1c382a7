"""predict --aoi: only the tiles that touch the polygons are computed; outside is nodata, inside unchanged."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch

from bicorseg.cli.main import main
from bicorseg.inference import ModelInfo, PredictOptions, Predictor
from tests.helpers.inference import TRANSFORM, pixel_model, random_image, spec, write_geotiff

X0, Y0 = TRANSFORM.c, TRANSFORM.f  # top-left corner; 0.25 m pixels


def _polygons(path: Path, polygons: list, crs: str | None = "EPSG:32633") -> Path:
    wkb = np.array(shapely.to_wkb(polygons), dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyogrio warns about a file without a CRS: one test wants it
        pyogrio.raw.write(path, wkb, [], [], geometry_type="Polygon", driver="GPKG", crs=crs)
    return path


class Counting(torch.nn.Module):
    """The pixel model, counting the tiles it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.model, self.tiles = pixel_model(3), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tiles += x.shape[0]
        return self.model(x)


def _predict(source: Path, out: Path, aoi: Path | None) -> tuple[np.ndarray, np.ndarray, int]:
    model = Counting()
    options = PredictOptions(tile=64, overlap=0.25, batch_size=2, probabilities="float32", block=128, aoi=aoi)
    Predictor(model, ModelInfo(4, 3, spec(3), "pixel-model"), options).predict_file(source, out)
    with rasterio.open(out / "scene.tif") as a, rasterio.open(out / "scene_prob.tif") as b:
        return a.read(1), b.read(), model.tiles


@pytest.mark.slow
def test_only_tiles_touching_the_area_are_computed_and_the_rest_is_nodata(tmp_path: Path) -> None:
    source = write_geotiff(tmp_path / "scene.tif", random_image(3, 300, 400, seed=1), nodata=0)
    # a triangle in the top-left quarter (pixel rows 20..120, columns 30..150)
    triangle = shapely.Polygon([(X0 + 7.5, Y0 - 5), (X0 + 37.5, Y0 - 5), (X0 + 7.5, Y0 - 30)])
    aoi = _polygons(tmp_path / "aoi.gpkg", [triangle])
    full_classes, full_probs, full_tiles = _predict(source, tmp_path / "full", None)
    classes, probs, tiles = _predict(source, tmp_path / "aoi", aoi)
    inside = rasterio.features.geometry_mask([triangle], (300, 400), TRANSFORM, invert=True)
    assert inside.sum() > 1000
    assert (classes[~inside] == 255).all() and np.isnan(probs[:, ~inside]).all()
    assert (classes[inside] == full_classes[inside]).all()
    np.testing.assert_allclose(probs[:, inside], full_probs[:, inside], rtol=0, atol=1e-6)
    assert 0 < tiles < full_tiles / 3  # the tiles away from the triangle were never computed
    with rasterio.open(tmp_path / "aoi" / "scene.tif") as out:
        assert "aoi=aoi.gpkg:" in out.tags()["bicorseg_settings"]


@pytest.mark.slow
def test_aoi_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from tests.helpers.inference import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 64, 64), nodata=0)
    box = shapely.box(X0, Y0 - 8, X0 + 8, Y0)
    cases = [
        (_polygons(tmp_path / "nocrs.gpkg", [box], crs=None), r"AOI: .*nocrs\.gpkg has no CRS"),
        (tmp_path / "missing.gpkg", r"AOI: .*missing\.gpkg does not exist"),
    ]
    for aoi, message in cases:
        code = main(["predict", str(source), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
                     "--tile", "64", "--aoi", str(aoi)])  # fmt: skip
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "out").exists()
    # a rerun with another area is not taken for the first one's result
    first = _polygons(tmp_path / "a.gpkg", [box])
    second = _polygons(tmp_path / "b.gpkg", [shapely.box(X0, Y0 - 4, X0 + 4, Y0)])
    base = [
        "predict",
        str(source),
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(tmp_path / "out"),
        "--tile",
        "64",
    ]
    assert main([*base, "--aoi", str(first)]) == 0
    capsys.readouterr()
    assert main([*base, "--aoi", str(second)]) == 2
    assert "settings differ" in capsys.readouterr().err
