"""Rasters from strangers, read through :mod:`bicorseg.raster_access`: no network nobody asked for, no
image that declares too many pixels.

A VRT or web-service description that refers to a remote source is refused by every command in
one line while a loopback listener sees no connection (``--allow-remote`` lets it through); a PNG
whose header declares ten gigapixels is refused at once by every reader.
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bicorseg.errors import BicorsegError, InputError
from tests.helpers import require
from tests.helpers.cli import refused, run_cli
from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff


def _vrt(
    path: Path, source: str, relative: bool = False, size: int = 16, count: int = 3, crs: bool = False
) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in range(1, count + 1)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    place = (
        "<SRS>EPSG:32631</SRS><GeoTransform>500000, 0.5, 0, 5700000, 0, -0.5</GeoTransform>" if crs else ""
    )
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{place}{bands}</VRTDataset>')
    return path


@pytest.mark.slow
def test_a_vrt_with_a_remote_source_is_refused_before_any_connection(tmp_path, capsys, listener) -> None:
    url = f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif"
    vrt = _vrt(tmp_path / "in" / "remote.vrt", url)
    nested = _vrt(tmp_path / "in" / "outer.vrt", "remote.vrt", relative=True)
    disguised = tmp_path / "in" / "disguised.tif"  # a VRT under a GeoTIFF's name: GDAL reads it all the same
    disguised.write_bytes(vrt.read_bytes())
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    for source in (vrt, nested, disguised):
        line = refused(capsys, "predict", source, "--checkpoint", checkpoint, "--output", tmp_path / "out")
        assert f"{source}: refers to the remote source {url}; remote access is off" in line
    line = refused(capsys, "heatmaps", nested, "--checkpoint", checkpoint, "--output", tmp_path / "out")
    assert f"{nested}: refers to the remote source {url}; remote access is off" in line
    assert listener.close() == 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_allow_remote_lets_the_source_be_read(tmp_path, capsys, listener) -> None:
    vrt = _vrt(tmp_path / "remote.vrt", f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif")
    checkpoint = tiny_checkpoint(tmp_path / "model.ckpt")
    status, lines = run_cli(
        capsys, "predict", vrt, "--checkpoint", checkpoint, "--output", tmp_path / "out", "--allow-remote"
    )
    assert status == 2 and "remote.vrt" in lines[-1]  # the server answers nothing, so the read fails
    assert listener.close() >= 1  # ... but it was asked


def _remote_class_raster(tmp_path: Path, port: int, command: str) -> tuple[Path, str, Path]:
    require("shapely")
    url = f"/vsicurl/http://127.0.0.1:{port}/classes.tif"
    output = tmp_path / ("out.gpkg" if command == "vectorize" else "areas.json")
    return _vrt(tmp_path / "classes.vrt", url, count=1, crs=True), url, output


@pytest.mark.parametrize("command", ["vectorize", "areas"])
def test_class_raster_commands_refuse_a_remote_source(tmp_path, capsys, listener, command) -> None:
    vrt, url, output = _remote_class_raster(tmp_path, listener.port, command)
    line = refused(capsys, command, vrt, "--output", output)
    assert f"{vrt}: refers to the remote source {url}; remote access is off" in line
    assert listener.close() == 0 and not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["vectorize", "areas"])
def test_class_raster_commands_reach_a_remote_source_when_allowed(
    tmp_path, capsys, listener, command
) -> None:
    vrt, _, output = _remote_class_raster(tmp_path, listener.port, command)
    status, lines = run_cli(capsys, command, vrt, "--output", output, "--allow-remote")
    assert status == 2 and "classes.vrt" in lines[-1]  # the server answers nothing, so the read fails
    assert listener.close() >= 1 and not output.exists()  # ... but it was asked


@pytest.mark.slow
def test_a_vrt_over_a_local_tif_is_predicted(tmp_path, capsys, checkpoint) -> None:
    import rasterio

    write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 48, 48))
    vrt = _vrt(tmp_path / "in" / "scene.vrt", "scene.tif", relative=True, size=48, crs=True)
    for source, out in ((vrt, "vrt"), (tmp_path / "in" / "scene.tif", "tif")):
        status, lines = run_cli(capsys, "predict", source, "--checkpoint", checkpoint, "--output", tmp_path / out,
                                "--quiet")  # fmt: skip
        assert status == 0, lines
    with (
        rasterio.open(tmp_path / "vrt" / "scene.tif") as a,
        rasterio.open(tmp_path / "tif" / "scene.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())


def test_web_service_descriptions_and_remote_paths_are_refused(tmp_path, listener) -> None:
    from bicorseg.data.io import read_image
    from bicorseg.raster_access import is_remote, open_raster

    wms = tmp_path / "tiles.xml"
    wms.write_text(
        f"<GDAL_WMS><Service name='TMS'><ServerUrl>http://127.0.0.1:{listener.port}/${{z}}/${{x}}/${{y}}.png"
        "</ServerUrl></Service><DataWindow><UpperLeftX>0</UpperLeftX><UpperLeftY>1</UpperLeftY>"
        "<LowerRightX>1</LowerRightX><LowerRightY>0</LowerRightY><TileLevel>0</TileLevel>"
        "</DataWindow><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY></GDAL_WMS>"
    )
    with pytest.raises(InputError, match=r"tiles\.xml: describes a web service; remote access is off"):
        with open_raster(wms):
            pass
    disguised = tmp_path / "tiles.tif"  # GDAL goes by the content, whatever the name
    disguised.write_bytes(wms.read_bytes())
    with pytest.raises(InputError, match=r"tiles\.tif: describes a web service"):
        read_image(disguised)
    commented = tmp_path / "commented.vrt"  # GDAL skips a byte-order mark and comments before the root
    vrt = _vrt(tmp_path / "plain.vrt", f"/vsicurl/http://127.0.0.1:{listener.port}/y.tif").read_bytes()
    commented.write_bytes(b"\xef\xbb\xbf<!-- a comment -->\n" + vrt)
    with pytest.raises(InputError, match=r"commented\.vrt: refers to the remote source /vsicurl/"):
        with open_raster(commented):
            pass
    with pytest.raises(InputError, match=r"/vsis3/bucket/x\.tif: is a remote source; remote access is off"):
        with open_raster("/vsis3/bucket/x.tif"):
            pass
    assert listener.close() == 0
    for name in ("/vsicurl/http://h/x.tif", "/vsizip//vsis3/b/x.zip/a.tif", "https://h/x.tif", "WMS:http://h",
                 "s3://b/x.tif", "/vsigs_streaming/b/x.tif"):  # fmt: skip
        assert is_remote(name), name
    for name in ("/data/x.tif", "file:///data/x.tif", "/vsizip//data/x.zip/a.tif", "C:\\data\\x.tif"):
        assert not is_remote(name), name


def test_evaluate_refuses_a_folder_dataset_image_with_a_remote_source(tmp_path, capsys, listener) -> None:
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    _vrt(root / "images" / "a.tif", f"/vsicurl/http://127.0.0.1:{listener.port}/x.tif", size=32)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "a.png")
    table = root / "classes.yaml"
    names = ("road", "building", "tree", "water")  # the checkpoint's classes
    classes = [{"name": n, "value": i} for i, n in enumerate(names)]
    table.write_text(yaml.safe_dump({"classes": classes, "ignore_index": 255}))
    line = refused(capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "m.ckpt"), "--dataset", "folder",
                   "--root", root, "--split", "all", "--class-table", table)  # fmt: skip
    assert "a.tif: refers to the remote source" in line
    assert listener.close() == 0


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring ``width x height`` RGB pixels, with (almost) no data: 66 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    return path


def _folder_dataset(root: Path) -> None:
    from bicorseg.data import build_dataset

    table = root / "classes.yaml"
    table.write_text("classes: [{name: a, value: 0}, {name: b, value: 1}]")
    dataset = build_dataset("folder", root, split="all", class_table=table)
    for index in range(len(dataset)):
        dataset[index]


def test_a_png_declaring_ten_gigapixels_is_refused_at_once(tmp_path, capsys, checkpoint) -> None:
    # CPU time of this process, not wall time: decoding 10 gigapixels would take minutes of it, and
    # other jobs on the machine do not count
    bomb = _png_declaring(tmp_path / "in" / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 100
    message = r"bomb\.png: 100000 x 100000 pixels is more than the limit of 2147483648 pixels"
    for command in ("predict", "heatmaps"):
        start = time.process_time()
        line = refused(capsys, command, bomb, "--checkpoint", checkpoint, "--output", tmp_path / "out")
        assert time.process_time() - start < 5 and re.search(message, line), line
    # the folder dataset (train, evaluate) and prepare read through the same check
    root = tmp_path / "folder"
    _png_declaring(root / "images" / "a.png", 100_000, 100_000)
    (root / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "a.png")
    start = time.process_time()
    with pytest.raises(InputError, match=r"a\.png: 100000 x 100000 pixels is more than the limit"):
        _folder_dataset(root)
    assert time.process_time() - start < 5
    release = tmp_path / "LoveDA" / "Train" / "Rural"
    _png_declaring(release / "images_png" / "0.png", 100_000, 100_000)
    (release / "masks_png").mkdir()
    Image.fromarray(np.ones((8, 8), np.uint8)).save(release / "masks_png" / "0.png")
    start = time.process_time()
    line = refused(capsys, "prepare", "loveda", "--source", tmp_path / "LoveDA", "--output", tmp_path / "p",
                   "--no-progress")  # fmt: skip
    assert time.process_time() - start < 5 and re.search(r"0\.png: 100000 x 100000 pixels", line), line
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_the_pixel_limit_is_configurable_and_leaves_pillow_alone(tmp_path, monkeypatch) -> None:
    from bicorseg.data.io import read_image

    small = tmp_path / "small.png"
    Image.fromarray(random_image(3, 20, 30).transpose(1, 2, 0)).save(small)
    tif = write_geotiff(tmp_path / "small.tif", random_image(3, 20, 30))
    pillow_limit = Image.MAX_IMAGE_PIXELS
    assert read_image(small).shape == (3, 20, 30)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "599")
    for path in (small, tif):
        # the limit's own message, not wrapped in the reader's "unreadable" (both are ValueErrors)
        with pytest.raises(
            InputError, match=rf"^{path}: 30 x 20 pixels is more than the limit of 599 pixels"
        ):
            read_image(path)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "600")
    assert read_image(small).shape == read_image(tif).shape == (3, 20, 30)
    monkeypatch.setenv("BICORSEG_MAX_PIXELS", "lots")
    with pytest.raises(BicorsegError, match=r"^BICORSEG_MAX_PIXELS must be a positive number"):
        read_image(small)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit and pillow_limit is not None
    # above Pillow's own limit (179 Mpx) but under bicorseg's: the header passes, the pixels are read
    monkeypatch.delenv("BICORSEG_MAX_PIXELS")
    big = _png_declaring(tmp_path / "big.png", 20_000, 10_000)
    with pytest.raises(InputError, match=r"big\.png: unreadable or truncated image"):
        read_image(big)  # the pixel data is missing: Pillow gets past the header and stops there
