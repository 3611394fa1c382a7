"""No output replaces a file an input reads, not even with ``--overwrite``: a VRT's sources (through
nested VRTs) and a STAC item's assets are inputs like the file named on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bicorseg.raster_access import input_files
from tests.helpers import require
from tests.helpers.cli import refused
from tests.helpers.inference import RGB, random_image, rgb_checkpoint, write_geotiff
from tests.helpers.network import vrt_of


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return rgb_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.ckpt")


def test_the_files_of_an_input_are_followed_through_nested_vrts(tmp_path) -> None:
    image = write_geotiff(tmp_path / "deep" / "image.tif", random_image(3, 16, 16))
    inner = vrt_of(tmp_path / "inner.vrt", str(image))
    outer = vrt_of(tmp_path / "outer.vrt", str(inner))
    assert set(input_files(outer)) == {outer.resolve(), inner.resolve(), image.resolve()}
    assert input_files(tmp_path / "missing.tif") == ()  # reading it says what is wrong


def test_a_vrt_source_in_the_output_folder_is_not_replaced(tmp_path, checkpoint, capsys) -> None:
    out = tmp_path / "out"
    source = write_geotiff(out / "mosaic.tif", random_image(3, 16, 16, seed=3))
    before = source.read_bytes()
    inner = vrt_of(tmp_path / "in" / "inner.vrt", str(source))
    vrt = vrt_of(tmp_path / "in" / "mosaic.vrt", str(inner))  # writes out/mosaic.tif: its own source
    line = refused(
        capsys, "predict", vrt, "--checkpoint", checkpoint, "--output", out, "--tile", "32", "--overwrite"
    )
    assert (
        f"the output {out / 'mosaic.tif'} of {vrt} would overwrite {source}, which the input {vrt} reads"
        in line
    )
    assert source.read_bytes() == before


def test_a_stac_asset_in_the_output_folder_is_not_replaced(tmp_path, checkpoint, capsys) -> None:
    require("pystac")
    out = tmp_path / "out"
    data = random_image(3, 32, 32, seed=4)
    asset = write_geotiff(out / "scene.tif", data)  # the user's image, in the folder the map goes to
    before = asset.read_bytes()
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "scene",  # the map is written as OUTPUT/<item id>.tif: the asset's own path
        "geometry": {"type": "Point", "coordinates": [15.0, 45.0]},
        "bbox": [15.0, 45.0, 15.0, 45.0],
        "properties": {"datetime": "2024-06-01T10:30:00Z"},
        "links": [],
        "assets": {
            "visual": {
                "href": str(asset),
                "type": "image/tiff",
                "roles": ["data"],
                "eo:bands": [{"common_name": n} for n in RGB],
            }
        },
    }
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    args = ["predict", "--stac-item", path, "--checkpoint", checkpoint, "--output", out, "--tile", "32"]
    line = refused(capsys, *args, "--overwrite")
    assert f"would overwrite {asset}, which the input {path} reads" in line, line
    assert asset.read_bytes() == before
