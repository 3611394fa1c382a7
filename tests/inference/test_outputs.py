"""The maps predict writes: Cloud-Optimized GeoTIFFs (validated by rio-cogeo), overviews by class and by
average, the QGIS style beside each class raster, and the confidence raster (with and without TTA)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from torch import nn

from bicorseg.cli.main import main
from bicorseg.inference import ModelInfo, PredictOptions, Predictor
from bicorseg.inference.raster_io import Georeference
from bicorseg.inference.tta import tta_passes, with_tta
from bicorseg.inference.writers import MapLayout, writing_maps
from tests.helpers import require
from tests.helpers.inference import (
    CLASSES,
    PALETTE,
    pixel_model,
    random_image,
    spec,
    write_geotiff,
)

cogeo = require("rio_cogeo.cogeo")


@pytest.mark.slow
def test_every_geotiff_output_is_a_valid_cog(tmp_path: Path, checkpoint: Path, capsys) -> None:
    data = random_image(3, 600, 520, seed=1)
    data[:, :40, :50] = 0
    source = write_geotiff(tmp_path / "in" / "scene.tif", data, nodata=0, tiled=True, blockxsize=256,
                           blockysize=256)  # fmt: skip
    code = main(["predict", str(source), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
                 "--tile", "128", "--probabilities", "--color", "--confidence", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for name in ("scene.tif", "scene_prob.tif", "scene_color.tif", "scene_confidence.tif"):
        path = tmp_path / "out" / name
        valid, errors, warnings = cogeo.cog_validate(str(path), quiet=True)
        assert valid and not errors and not warnings, (name, errors, warnings)
        with rasterio.open(path) as cog:
            assert cog.overviews(1) == [2, 4], name  # 600 x 520 in 256 px blocks: down to 150 x 130
            assert cog.crs.to_epsg() == 32633 and cog.block_shapes[0] == (256, 256)
    with rasterio.open(tmp_path / "out" / "scene.tif") as out:
        assert out.nodata == 255 and out.colormap(1)[1] == (255, 0, 0, 255)
        assert out.tags()["bicorseg_input"] == "scene.tif"
        assert (out.read(1)[:40, :50] == 255).all()
    with rasterio.open(tmp_path / "out" / "scene_prob.tif") as prob:
        assert prob.scales[0] == pytest.approx(1 / 254) and prob.descriptions == CLASSES


def _layout(**extra) -> MapLayout:
    return MapLayout(CLASSES, PALETTE, **extra)


def _write_maps(tmp_path: Path, arrays: dict, layout: MapLayout) -> dict[str, Path]:
    height, width = arrays["class"].shape
    targets = layout.targets(tmp_path, "m", picture=False)
    geo = Georeference("EPSG:32633", (0.5, 0.0, 500_000.0, 0.0, -0.5, 5_000_000.0), None, (256, 256))
    tags = {kind: {"bicorseg_settings": "test"} for kind in targets}
    with writing_maps(targets, layout, geo, (height, width), tags) as write:
        write(0, 0, arrays)
    return targets


def test_class_overviews_keep_the_most_common_class_and_probabilities_are_averaged(tmp_path: Path) -> None:
    """Each 2 x 2 cell: three pixels of one class, one of another at a random place. The first
    overview must be the majority everywhere (a nearest sample would pick the odd one in some)."""
    rng = np.random.default_rng(0)
    cells = 256
    majority = rng.integers(0, 4, (cells, cells)).astype(np.uint8)
    classes = np.repeat(np.repeat(majority, 2, 0), 2, 1)
    odd = rng.integers(0, 4, (cells, cells))
    rows, cols = np.arange(cells)[:, None] * 2 + odd // 2, np.arange(cells)[None, :] * 2 + odd % 2
    classes[rows, cols] = (majority + 1) % 4
    probabilities = rng.integers(0, 255, (4, 2 * cells, 2 * cells)).astype(np.uint8)
    targets = _write_maps(
        tmp_path, {"class": classes, "probabilities": probabilities}, _layout(probabilities="uint8")
    )
    with rasterio.open(targets["class"]) as out:
        assert out.overviews(1)[0] == 2
    with rasterio.open(targets["class"], overview_level=0) as out:
        overview = out.read(1)
    assert (overview == majority).all()  # NEAREST would keep the odd pixel in a quarter of the cells
    with rasterio.open(targets["probabilities"], overview_level=0) as out:
        first = out.read(1)
    mean = probabilities[0].reshape(cells, 2, cells, 2).astype(float).mean(axis=(1, 3))
    assert np.abs(first - mean).max() <= 1.0  # GDAL rounds the average


@pytest.mark.slow
def test_a_qgis_style_beside_each_class_raster(tmp_path: Path, checkpoint: Path, capsys) -> None:
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 60, 70), nodata=0)
    Image.fromarray(random_image(3, 40, 30).transpose(1, 2, 0)).save(tmp_path / "in" / "photo.png")
    args = ["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"),
            "--tile", "64", "--quiet"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    style = tmp_path / "out" / "scene.qml"
    entries = ET.parse(style).getroot().findall(".//paletteEntry")
    assert [e.get("label") for e in entries] == list(CLASSES)
    assert [e.get("color") for e in entries] == ["#{:02x}{:02x}{:02x}".format(*c) for c in PALETTE]
    assert not (tmp_path / "out" / "photo.qml").exists()  # a PNG class map gets no style
    assert gdal_class_names(tmp_path / "out" / "scene.tif", tmp_path) == (list(CLASSES), list(CLASSES))
    style.unlink()
    (tmp_path / "out" / "scene.tif.aux.xml").unlink()
    stamp = (tmp_path / "out" / "scene.tif").stat().st_mtime_ns
    assert main(args) == 0  # the rerun skips the raster and writes the missing style and names
    assert style.is_file() and (tmp_path / "out" / "scene.tif").stat().st_mtime_ns == stamp
    assert (tmp_path / "out" / "scene.tif.aux.xml").is_file()
    assert source.is_file()


def gdal_class_names(raster: Path, work: Path) -> tuple[list[str], list[str]]:
    """The category names and the RAT's class names that GDAL reads for a raster's band 1 (through a
    copy of it as a VRT, whose XML shows everything GDAL knows about the band)."""
    import rasterio.shutil

    rasterio.shutil.copy(raster, work / "probe.vrt", driver="VRT")
    band = ET.parse(work / "probe.vrt").getroot().find("VRTRasterBand")
    categories = [c.text for c in band.findall("./CategoryNames/Category")]
    table = band.find("GDALRasterAttributeTable")
    fields = [f.findtext("Name") for f in table.findall("FieldDefn")]
    usages = [f.findtext("Usage") for f in table.findall("FieldDefn")]
    assert fields == ["value", "class", "red", "green", "blue", "alpha"] and usages[:2] == ["5", "2"]
    rows = [[v.text for v in row.findall("F")] for row in table.findall("Row")]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    assert [tuple(int(v) for v in r[2:5]) for r in rows] == [tuple(c) for c in PALETTE[: len(rows)]]
    return categories, [r[1] for r in rows]


def test_class_names_reach_gdal_readers_and_the_cog_stays_valid(tmp_path: Path) -> None:
    """writing_maps and write_style on a raster: the COG validates, GDAL reads names with odd characters."""
    from rio_cogeo import cogeo

    from bicorseg.inference.writers import write_style

    names = ("a & <b>", 'c "d"', "тёплый", "[red]e[/red]")
    layout = MapLayout(names, tuple(tuple(c) for c in PALETTE[:4]))
    geo = Georeference("EPSG:32633", (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0))
    target = tmp_path / "m.tif"
    with writing_maps({"class": target}, layout, geo, (40, 50), {"class": {}}) as write:
        write(0, 0, {"class": np.arange(2000, dtype=np.uint8).reshape(40, 50) % 4})
    written = write_style(target, layout)
    assert [p.name for p in written] == ["m.qml", "m.tif.aux.xml"]
    valid, errors, _ = cogeo.cog_validate(str(target), quiet=True)
    assert valid and not errors
    assert gdal_class_names(target, tmp_path) == (list(names), list(names))


def _asymmetric(bands: int = 3, classes: int = 4) -> nn.Module:
    """A 3 x 3 convolution: its prediction changes under flips, so TTA passes disagree somewhere."""
    torch.manual_seed(1)
    conv = nn.Conv2d(bands, classes, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(4.0)
    return conv.eval()


def test_tta_disagreement_is_the_share_of_passes_against_the_merged_argmax() -> None:
    model = _asymmetric()
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        out = with_tta(model, "d4", disagreement=True)(x)
        merged = with_tta(model, "d4")(x)
        views = [one.inverse(model(one.forward(x)), (40, 36)).argmax(1) for one in tta_passes("d4")]
    assert out.shape == (2, 5, 40, 36)
    torch.testing.assert_close(out[:, :4], merged)
    expected = sum((v != merged.argmax(1)).float() for v in views) / 8
    torch.testing.assert_close(out[:, 4], expected)
    assert 0 < float(expected.mean()) < 0.5  # the passes do disagree, on a minority of pixels
    with torch.no_grad():  # one pass never disagrees with itself
        assert (with_tta(model, "none", disagreement=True)(x)[:, 4] == 0).all()


def test_confidence_raster(tmp_path: Path) -> None:
    data = random_image(3, 50, 60, seed=2)
    data[:, :10, :10] = 0
    source = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    info = ModelInfo(4, 3, spec(3), "pixel-model")
    options = PredictOptions(tile=64, probabilities="float32", confidence=True)
    Predictor(pixel_model(3), info, options).predict_file(source, tmp_path / "plain")
    with rasterio.open(tmp_path / "plain" / "scene_confidence.tif") as conf:
        assert conf.descriptions == ("max_probability", "normalised_entropy") and conf.dtypes[0] == "float32"
        values = conf.read()
    with rasterio.open(tmp_path / "plain" / "scene_prob.tif") as prob:
        p = prob.read()
    assert np.isnan(values[:, :10, :10]).all() and np.isfinite(values[:, 10:, 10:]).all()
    valid = np.isfinite(p[0])
    np.testing.assert_allclose(values[0][valid], p.max(0)[valid], rtol=0, atol=1e-6)
    entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(0) / math.log(4)
    np.testing.assert_allclose(values[1][valid], entropy[valid], rtol=0, atol=1e-5)
    assert 0 <= values[1][valid].min() and values[1][valid].max() <= 1

    # with TTA: a third band, the share of passes whose arg-max differs (one tile: multiples of 1/4)
    options = PredictOptions(tile=64, confidence=True, tta="lr")
    Predictor(_asymmetric(), info, options).predict_file(source, tmp_path / "tta")
    with rasterio.open(tmp_path / "tta" / "scene_confidence.tif") as conf:
        assert conf.descriptions[2] == "tta_disagreement"
        share = conf.read(3)[10:, 10:]
    assert np.isin(np.round(share * 4, 4), [0, 1, 2, 3, 4]).all() and share.max() > 0


def test_the_heatmap_figure_draws_class_names_as_text(tmp_path: Path) -> None:
    """A "$" in a class name starts no formula (matplotlib's mathtext would fail on "$\\frac$")."""
    from bicorseg.inference.heatmaps import draw_figure
    from bicorseg.spec import DatasetSpec

    names = ("cost $\\frac$", "$x$ and $", "c", "d")
    dataset = DatasetSpec("d", names, tuple(tuple(c) for c in PALETTE[:4]), 255, (0, 1, 2, 3))
    output = tmp_path / "figure.png"
    draw_figure(output, np.zeros((8, 8, 3)), np.zeros((2, 2), np.uint8), np.zeros((4, 2, 2)),
                ModelInfo(4, 3, dataset, "m"), 1, title="$\\frac$")  # fmt: skip
    with Image.open(output) as figure:
        assert figure.size[0] > 0
