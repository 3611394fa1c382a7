"""Windowed prediction on real GeoTIFFs (EPSG:32633): georeferencing, seams, nodata, bands, safety."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from bicorseg.errors import BicorsegWarning, CheckpointError, InputError
from bicorseg.inference import ModelInfo, PredictOptions, Predictor, predict_files
from tests.helpers.inference import (
    CRS,
    TRANSFORM,
    direct_probabilities,
    pixel_model,
    random_image,
    spec,
    write_geotiff,
)
from tests.helpers.temp_owners import stale_temps


def pixel_predictor(bands: int = 3, block: int = 4096, **options) -> tuple[Predictor, object]:
    model = pixel_model(bands)
    info = ModelInfo(4, bands, spec(bands, **options.pop("spec", {})), "pixel-model")
    return Predictor(
        model, info, PredictOptions(tile=64, overlap=0.25, batch_size=4, block=block, **options)
    ), model


def normalised(data: np.ndarray, info: ModelInfo) -> np.ndarray:
    mean = np.asarray(info.dataset.mean, np.float32)[:, None, None]
    std = np.asarray(info.dataset.std, np.float32)[:, None, None]
    return ((data.astype(np.float32) - mean) / std).astype(np.float32)


@pytest.mark.slow
def test_output_keeps_crs_transform_size_and_nodata(tmp_path: Path, checkpoint: Path) -> None:
    data = random_image(3, 150, 210)
    data[:, :30, :40] = 0  # nodata corner
    src = write_geotiff(
        tmp_path / "in" / "scene.tif", data, nodata=0, tiled=True, blockxsize=64, blockysize=64
    )
    options = PredictOptions(tile=64, overlap=0.25, batch_size=4)  # 64 does not divide 150 x 210
    [result] = predict_files([src], checkpoint, tmp_path / "out", options)
    assert result.outputs["class"] == tmp_path / "out" / "scene.tif"
    with rasterio.open(src) as a, rasterio.open(result.outputs["class"]) as b:
        assert b.crs == a.crs and b.crs.to_epsg() == 32633
        assert b.transform == a.transform == TRANSFORM
        assert (b.width, b.height, b.count, b.dtypes[0]) == (210, 150, 1, "uint8")
        assert b.nodata == 255
        assert b.profile["tiled"] and b.block_shapes[0] == (128, 128)  # the input's 64 px: COG's least
        assert b.compression.value.lower() == "deflate"
        assert b.colormap(1)[1] == (255, 0, 0, 255)
        classes = b.read(1)
    assert (classes[:30, :40] == 255).all()
    rest = classes.copy()
    rest[:30, :40] = 0
    assert rest.max() < 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scene.qml",
        "scene.tif",
        "scene.tif.aux.xml",
    ]


def test_blending_leaves_no_seam_on_rasters(tmp_path: Path) -> None:
    """A per-pixel model gives the same raster tiled (in blocks smaller than the raster) and untiled."""
    data = random_image(3, 170, 250, seed=3)
    src = write_geotiff(tmp_path / "seam.tif", data)
    predictor, model = pixel_predictor(block=96, probabilities="float32")
    predictor.predict_file(src, tmp_path / "out")
    expected = direct_probabilities(model, normalised(data, predictor.info))
    with rasterio.open(tmp_path / "out" / "seam.tif") as out:
        assert (out.read(1) == expected.argmax(0)).all()
    with rasterio.open(tmp_path / "out" / "seam_prob.tif") as prob:
        assert prob.descriptions == ("road", "building", "tree", "water")
        np.testing.assert_allclose(prob.read(), expected, atol=1e-5, rtol=0)


def test_nodata_nan_and_uint8_probabilities(tmp_path: Path) -> None:
    data = random_image(3, 90, 100, seed=4).astype(np.float32)
    data[0, 10:20, 10:20] = np.nan  # NaN in one band is nodata
    data[:, 50:, 60:] = -9999.0
    src = write_geotiff(tmp_path / "float.tif", data, nodata=-9999.0)
    predictor, _ = pixel_predictor(probabilities="uint8", color=True)
    with pytest.warns(BicorsegWarning, match=r"float\.tif: 100 pixel\(s\) with undeclared nodata"):
        result = predictor.predict_file(src, tmp_path / "out")
    with rasterio.open(result.outputs["class"]) as out:
        classes = out.read(1)
    nodata = np.zeros((90, 100), bool)
    nodata[10:20, 10:20] = True
    nodata[50:, 60:] = True
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 4).all()
    with rasterio.open(result.outputs["probabilities"]) as prob:
        assert prob.nodata == 255 and prob.scales[0] == pytest.approx(1 / 254)
        p = prob.read()
    assert (p[:, nodata] == 255).all()
    total = p[:, ~nodata].astype(int).sum(0)
    assert np.abs(total - 254).max() <= 2
    with rasterio.open(result.outputs["color"]) as color:
        rgba = color.read()
    assert (rgba[3][nodata] == 0).all() and (rgba[3][~nodata] == 255).all()
    assert tuple(rgba[:3, 0, 0]) == spec().palette[classes[0, 0]]


@pytest.mark.parametrize("bands, dtype", [(1, np.uint8), (4, np.uint8), (3, np.uint16)])
def test_band_counts_and_16_bit(tmp_path: Path, bands: int, dtype) -> None:
    """Any band count; 16-bit input is normalised with the checkpoint's raw-unit statistics."""
    stats = {"mean": 2000.0, "std": 800.0} if dtype == np.uint16 else {}
    predictor, model = pixel_predictor(bands, spec=stats)
    data = random_image(bands, 70, 90, dtype=dtype, seed=bands)
    data[-1, :5, :5] = 0  # GDAL calls band 4 of a 4-band byte GeoTIFF alpha: it is data here
    src = write_geotiff(tmp_path / "in.tif", data)
    with _no_normalisation_warning():
        predictor.predict_file(src, tmp_path / "out")
    expected = direct_probabilities(model, normalised(data, predictor.info)).argmax(0)
    with rasterio.open(tmp_path / "out" / "in.tif") as out:
        assert (out.read(1) == expected).all()
        assert out.count == 1 and out.crs.to_epsg() == 32633


class _no_normalisation_warning:
    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        assert not [w for w in self.caught if "normalisation" in str(w.message)]


def test_16_bit_input_with_8_bit_statistics_warns(tmp_path: Path) -> None:
    predictor, _ = pixel_predictor()
    src = write_geotiff(tmp_path / "u16.tif", random_image(3, 40, 40, dtype=np.uint16))
    with pytest.warns(UserWarning, match="8-bit units"):
        predictor.predict_file(src, tmp_path / "out")


def test_interrupted_run_leaves_no_partial_output_and_rerun_skips(tmp_path: Path) -> None:
    src = write_geotiff(tmp_path / "in" / "big.tif", random_image(3, 200, 200))
    predictor, _ = pixel_predictor(probabilities="uint8", color=True)
    out_dir = tmp_path / "out"

    class Interrupt:
        def start(self, name: str, total: int) -> None:
            self.seen = 0

        def advance(self, n: int) -> None:
            self.seen += n
            if self.seen >= 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predictor.predict_file(src, out_dir, Interrupt())
    assert list(out_dir.iterdir()) == []  # no output, no temporary file
    left = stale_temps(out_dir / "big.tif", out_dir / "big_prob.tif")  # by a killed run
    (out_dir / ".big.tif.12345.tmp").write_bytes(b"not bicorseg's: left alone")
    first = predictor.predict_file(src, out_dir)
    assert not any(p.exists() for p in left)
    (out_dir / ".big.tif.12345.tmp").unlink()
    assert not first.skipped
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "big.qml",
        "big.tif",
        "big.tif.aux.xml",
        "big_color.tif",
        "big_prob.tif",
    ]
    assert predictor.predict_file(src, out_dir).skipped
    (out_dir / "big_color.tif").unlink()  # an output missing: the file is redone
    assert not predictor.predict_file(src, out_dir).skipped


def test_png_jpeg_and_rgba_inputs_give_png(tmp_path: Path) -> None:
    rgb = random_image(3, 60, 80, seed=5).transpose(1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)
    rgba = np.dstack([rgb, np.full((60, 80), 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent: masked
    Image.fromarray(rgba).save(tmp_path / "clip.png")
    predictor, _ = pixel_predictor(color=True)
    for name in ("photo.jpg", "clip.png"):
        result = predictor.predict_file(tmp_path / name, tmp_path / "out")
        assert result.outputs["class"].suffix == ".png"
        classes = np.asarray(Image.open(result.outputs["class"]))
        assert classes.shape == (60, 80) and classes.dtype == np.uint8
        assert np.asarray(Image.open(result.outputs["color"])).shape == (60, 80, 4)
    with Image.open(tmp_path / "out" / "clip.png") as picture:
        # a paletted PNG: the values are the class indices, the palette the class colours
        assert picture.mode == "P"
        colours = [tuple(c) for c in np.asarray(picture.getpalette()).reshape(-1, 3)]
        alpha = picture.info["transparency"]
        classes = np.asarray(picture)
    palette = predictor.layout.palette
    assert colours[: len(palette)] == [tuple(c) for c in palette] and colours[255] == (0, 0, 0)
    assert list(alpha[: len(palette)]) == [255] * len(palette) and alpha[255] == 0  # nodata transparent
    assert (classes[:10, :10] == 255).all() and (classes[10:] < 4).all()
    with Image.open(tmp_path / "out" / "clip_color.png") as colour:  # the colour map agrees with the palette
        assert (np.asarray(colour)[10:, :, :3] == np.asarray(palette, np.uint8)[classes[10:]]).all()


@pytest.mark.slow
def test_bad_inputs_name_the_file(tmp_path: Path, checkpoint: Path) -> None:
    two = write_geotiff(tmp_path / "two.tif", random_image(2, 32, 32), photometric="MINISBLACK")
    with pytest.raises(
        InputError, match=r"two\.tif has 2 band\(s\) but the checkpoint .*tiny\.ckpt expects 3"
    ):
        predict_files([two], checkpoint, tmp_path / "out")
    two.unlink()
    write_geotiff(tmp_path / "five.tif", random_image(5, 32, 32))
    with pytest.raises(InputError, match=r"five\.tif has 5 band\(s\) .* expects 3"):
        predict_files([tmp_path], checkpoint, tmp_path / "out")  # a folder: checked before any work
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(InputError, match=r"cannot read .*broken\.tif"):
        predict_files([broken], checkpoint, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no images in folder .*empty"):
        predict_files([tmp_path / "empty"], checkpoint, tmp_path / "out")
    with pytest.raises(InputError, match="input not found"):
        predict_files([tmp_path / "missing.tif"], checkpoint, tmp_path / "out")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        predict_files([tmp_path / "five.tif"], tmp_path / "missing.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_raster_is_an_input_error(tmp_path: Path) -> None:
    src = write_geotiff(
        tmp_path / "cut.tif", random_image(3, 128, 128), tiled=True, blockxsize=32, blockysize=32
    )
    content = src.read_bytes()
    src.write_bytes(content[: len(content) // 2])
    predictor, _ = pixel_predictor()
    with pytest.raises(InputError, match=r"cut\.tif"):
        predictor.predict_file(src, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_crs_survives_without_nodata_and_striped_input(tmp_path: Path) -> None:
    src = write_geotiff(tmp_path / "striped.tif", random_image(3, 50, 70))
    predictor, _ = pixel_predictor()
    result = predictor.predict_file(src, tmp_path / "out")
    with rasterio.open(result.outputs["class"]) as out:
        assert out.crs.to_string() == CRS and out.block_shapes[0] == (256, 256)
        assert (out.read(1) < 4).all()
