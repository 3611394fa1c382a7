"""Reading images and label maps: every format, band count and bit depth; clear errors for bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from bicorseg.data.io import (
    check_finite,
    read_georeferenced,
    read_image,
    read_mask,
    write_png,
    write_tiff,
)
from bicorseg.errors import InputError
from bicorseg.raster_access import open_raster

RNG = np.random.default_rng(0)


def _rgb(h=20, w=30):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_rgb_grey_and_palette(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (3, 20, 30) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb.transpose(2, 0, 1))

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert read_image(tmp_path / "grey.png").shape == (1, 20, 30)

    palette_image = Image.fromarray((grey % 3).astype(np.uint8), mode="L").convert("P")
    palette_image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * (256 * 3 - 9))
    palette_image.save(tmp_path / "pal.png")
    as_rgb = read_image(tmp_path / "pal.png")
    assert as_rgb.shape == (3, 20, 30)
    assert {tuple(c) for c in as_rgb.reshape(3, -1).T} <= {(10, 20, 30), (40, 50, 60), (70, 80, 90)}
    # As a mask: palette indices (class ids) or palette colours, as asked.
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png"), grey % 3)
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png", mode="colour"), as_rgb)


def test_16_bit_png_grey_and_colour(tmp_path):
    grey = RNG.integers(0, 65536, (16, 24), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    out = read_image(tmp_path / "grey16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[0], grey)

    colour = RNG.integers(0, 65536, (3, 16, 24), dtype=np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL's PNG driver writes through a copy
        with rasterio.open(tmp_path / "rgb16.png", "w", driver="PNG", width=24, height=16, count=3,
                           dtype="uint16") as dst:  # fmt: skip
            dst.write(colour)
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint16 and out.shape == (3, 16, 24)
    np.testing.assert_array_equal(out, colour)


def test_jpeg_pixels_are_the_ones_predict_reads(tmp_path):
    """Pillow's and GDAL's JPEG decoders differ (chroma upsampling): training and evaluation must
    see the pixels that ``predict`` reads in windows through rasterio."""
    Image.fromarray(_rgb(96, 80)).save(tmp_path / "a.jpg", quality=90, subsampling=2)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (3, 96, 80) and out.dtype == np.uint8
    with Image.open(tmp_path / "a.jpg") as image:
        assert not np.array_equal(np.asarray(image).transpose(2, 0, 1), out)  # the decoders do differ here
    with open_raster(tmp_path / "a.jpg") as src:
        for window in (Window(0, 0, 80, 40), Window(0, 40, 80, 56)):
            top = window.row_off
            np.testing.assert_array_equal(src.read(window=window), out[:, top : top + window.height])


def test_geotiff_any_band_count_16_bit_with_georeference(tmp_path):
    array = RNG.integers(0, 4096, (5, 12, 14), dtype=np.uint16)
    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5400000.0)
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=14, height=12, count=5, dtype="uint16",
                       crs="EPSG:32632", transform=transform) as dst:  # fmt: skip
        dst.write(array)
    out, georef = read_georeferenced(tmp_path / "a.tif")
    np.testing.assert_array_equal(out, array)
    assert georef is not None and georef.crs.to_epsg() == 32632 and georef.transform == transform


def test_missing_unreadable_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nothere\.png: file does not exist"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match=r"text\.png: not a readable image"):
        read_image(tmp_path / "text.png")
    Image.fromarray(_rgb(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png: unreadable or truncated"):
        read_image(tmp_path / "cut.png")
    Image.fromarray(_rgb(200, 200)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jpg: unreadable or truncated"):
        read_image(tmp_path / "cut.jpg")
    write_tiff(tmp_path / "full.tif", RNG.integers(0, 255, (3, 300, 300), dtype=np.uint8))
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"cut\.tif: unreadable or truncated"):
        read_image(tmp_path / "cut.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.tif"):
        read_image(tmp_path / "empty.tif")


def test_mask_modes_and_errors(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="index mask must have one band"):
        read_mask(tmp_path / "colour.png")
    assert read_mask(tmp_path / "colour.png", mode="colour").shape == (3, 20, 30)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(InputError, match="colour mask must be 8-bit RGB"):
        read_mask(tmp_path / "grey.png", mode="colour")


def test_nan_is_an_error(tmp_path):
    array = np.ones((2, 4, 4), np.float32)
    array[1, 2, 2] = np.nan
    with pytest.raises(InputError, match=r"x\.tif: 1 pixel values are NaN"):
        check_finite(array, tmp_path / "x.tif")


def test_writers_are_atomic(tmp_path):
    write_png(tmp_path / "m.png", np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert read_mask(tmp_path / "m.png").tolist() == np.arange(12).reshape(3, 4).tolist()
    with pytest.raises(TypeError):  # fails inside the writer, after the temporary file exists
        write_tiff(tmp_path / "bad.tif", np.zeros((1, 4, 4), dtype=bool))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # no half-written or temp file


def test_normalisation_is_the_same_for_arrays_and_tensors_and_inverts():
    import torch

    from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, denormalise, normalise

    raw = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2) * 20
    array = normalise(raw, IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT)
    assert array.dtype == np.float32
    assert array[2, 1, 1] == np.float32((np.float32(220.0) - np.float32(103.53)) / np.float32(57.375))
    tensor = normalise(torch.from_numpy(raw), IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT)
    np.testing.assert_array_equal(tensor.numpy(), array)
    batch = normalise(torch.from_numpy(raw)[None], IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT)
    assert batch.shape == (1, 3, 2, 2) and torch.equal(batch[0], tensor)  # a batch: per band too
    np.testing.assert_allclose(denormalise(array, IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT), raw, atol=1e-4)
