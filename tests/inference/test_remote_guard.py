"""No network access nobody asked for, by what GDAL would do: rasters.

Each hostile file is first read with plain rasterio to show that GDAL really reaches a loopback
listener for it; then through :func:`bicorseg.raster_access.open_raster`, which must refuse it in
one line while the listener sees no connection at all, with ``no_proxy=*`` in the environment
(which would exempt every host from an ordinary proxy). Some cases are refused before GDAL opens
the file (what is visible in it); the tile indexes are not visible, and are refused because GDAL
could not reach the network. Asked-for remote reads (``allow_remote``, a URL or STAC item the user
named) still work, for that input alone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.cli.main import main
from bicorseg.errors import InputError
from bicorseg.raster_access import OFFLINE_ENVIRON, REFUSING_PROXY, check_no_network, open_raster
from tests.helpers import require
from tests.helpers.inference import CRS, RGB, random_image, rgb_checkpoint, write_geotiff
from tests.helpers.network import Listener, tile_index, tms_description, vrt_of
from tests.helpers.range_server import RangeServer

require("pyogrio")  # the tile indexes are written with it

WORLD = (-20037508.34, -20037508.34, 20037508.34, 20037508.34)
# the 16 x 16 px grid of the test VRTs and GeoTIFFs: EPSG:32633, 25 cm pixels from (500000, 5000000)
TILE = (500_000.0, 4_999_996.0, 500_004.0, 5_000_000.0)
NEXT_TILE = (500_004.0, 4_999_996.0, 500_008.0, 5_000_000.0)


def hostile(kind: str, folder: Path, listener: Listener) -> Path:
    """A local file that makes GDAL reach ``listener`` by itself."""
    if kind == "vrt with an inline TMS description (http:/ spelling)":
        url = f"http:/127.0.0.1:{listener.port}/${{z}}/${{x}}/${{y}}.png"
        return vrt_of(folder / "inline.vrt", tms_description(url))
    if kind == "vrt with an http:/ source":
        return vrt_of(folder / "spelling.vrt", f"http:/127.0.0.1:{listener.port}/x.tif")
    if kind == "tile index of a TMS service":
        tms = tms_description(listener.url("${z}/${x}/${y}.png"))
        return tile_index(folder / "tms.gti.gpkg", [(tms, WORLD)], "EPSG:3857")
    if kind == "tile index of a /vsicurl/ tile":
        return tile_index(folder / "curl.gti.gpkg", [(f"/vsicurl/{listener.url('t.tif')}", TILE)], CRS)
    if kind == "tile index of an S3 tile (endpoint on loopback)":
        return tile_index(folder / "s3.gti.gpkg", [("/vsis3/bucket/t.tif", TILE)], CRS)
    if kind == "tile index whose second tile is remote":
        local = write_geotiff(folder / "local.tif", random_image(3, 16, 16, seed=1))
        tiles = [(str(local), TILE), (f"/vsicurl/{listener.url('u.tif')}", NEXT_TILE)]
        return tile_index(folder / "mixed.gti.gpkg", tiles, CRS)
    raise AssertionError(kind)


CASES = [
    "vrt with an inline TMS description (http:/ spelling)",
    "vrt with an http:/ source",
    "tile index of a TMS service",
    "tile index of a /vsicurl/ tile",
    "tile index of an S3 tile (endpoint on loopback)",
    "tile index whose second tile is remote",
]


@pytest.fixture
def s3_on_loopback(monkeypatch, listener):
    monkeypatch.setenv("AWS_S3_ENDPOINT", f"127.0.0.1:{listener.port}")
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")


def read_all(path: Path) -> None:
    """Open ``path`` and read every pixel, with plain rasterio (errors ignored)."""
    with rasterio.Env(GDAL_HTTP_MAX_RETRY="0", GDAL_HTTP_TIMEOUT="5"):
        try:
            with rasterio.open(path) as src:
                src.read()
        except rasterio.errors.RasterioError:
            pass


@pytest.mark.parametrize("kind", CASES)
def test_gdal_itself_reaches_the_listener_for_each_case(kind, tmp_path, listener, s3_on_loopback) -> None:
    path = hostile(kind, tmp_path, listener)
    read_all(path)
    assert listener.close() > 0, f"{kind}: GDAL did not reach the network, so the case shows nothing"


@pytest.mark.parametrize("kind", CASES)
def test_no_request_leaves_and_the_refusal_is_one_line(kind, tmp_path, listener, s3_on_loopback, monkeypatch):
    monkeypatch.delenv("BICORSEG_ALLOW_REMOTE", raising=False)
    monkeypatch.setenv("no_proxy", "*")  # exempts every host from a proxy libcurl is told to use
    monkeypatch.setenv("NO_PROXY", "*")
    path = hostile(kind, tmp_path, listener)
    with pytest.raises(InputError) as caught:
        with open_raster(path) as src:
            src.read()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and "remote access is off" in message
    assert listener.close() == 0
    assert os.environ["no_proxy"] == "*" and os.environ["NO_PROXY"] == "*"  # the environment is restored


def test_the_tile_index_is_refused_by_what_gdal_did_not_by_its_name(tmp_path, listener) -> None:
    path = hostile("tile index of a /vsicurl/ tile", tmp_path, listener)
    with pytest.raises(InputError, match=r"reading it needs the network \(a source, tile, link or service"):
        with open_raster(path):
            pass
    # GDAL opens this one from its local tile and reads it without a word, leaving the other blank;
    # a reader in windows is stopped at the window (check_no_network), any other when the file closes
    mixed = hostile("tile index whose second tile is remote", tmp_path, listener)
    with pytest.raises(InputError, match="needs the network") as at_exit:
        with open_raster(mixed) as src:
            src.read()
            with pytest.raises(InputError, match="needs the network"):
                check_no_network(mixed)
            after_read = True
    assert after_read and str(at_exit.value).startswith(f"{mixed}: ")
    assert listener.close() == 0


def test_the_offline_environment_is_put_back(tmp_path, monkeypatch, listener) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("all_proxy", raising=False)
    logger = logging.getLogger("rasterio._err")
    level, filters = logger.level, list(logger.filters)
    local = write_geotiff(tmp_path / "a.tif", random_image(3, 16, 16))
    with open_raster(local) as src:
        assert os.environ["http_proxy"] == REFUSING_PROXY and "no_proxy" not in os.environ
        assert set(OFFLINE_ENVIRON) >= {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
        src.read()
    assert os.environ["http_proxy"] == "http://proxy.example:3128" and "all_proxy" not in os.environ
    assert logger.level == level and logger.filters == filters
    listener.close()


def test_allowed_remote_reads_still_work_through_a_tile_index(tmp_path) -> None:
    served = tmp_path / "served"
    data = random_image(3, 16, 16, seed=5)
    write_geotiff(served / "t.tif", data)
    with RangeServer(served) as server:
        index = tile_index(tmp_path / "idx.gti.gpkg", [(f"/vsicurl/{server.url('t.tif')}", TILE)], CRS)
        with pytest.raises(InputError, match="needs the network"):
            with open_raster(index):
                pass
        assert server.requests == []
        with open_raster(index, allow_remote=True) as src:
            assert np.array_equal(src.read(), data)
        assert server.requests_for("t.tif")


# --- through the command line ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return rgb_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.ckpt")


def served_item(root: Path) -> Path:
    """A STAC item (``item.json``) with one asset per band, all relative to it."""
    require("pystac")
    data = random_image(3, 32, 32, seed=9)
    for i, name in enumerate(RGB):
        write_geotiff(root / f"{name}.tif", data[i : i + 1])
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "served",
        "geometry": {"type": "Point", "coordinates": [15.0, 45.0]},
        "bbox": [15.0, 45.0, 15.0, 45.0],
        "properties": {"datetime": "2024-06-01T10:30:00Z"},
        "links": [],
        "assets": {
            n: {
                "href": f"./{n}.tif",
                "type": "image/tiff",
                "roles": ["data"],
                "eo:bands": [{"common_name": n}],
            }
            for n in RGB
        },
    }
    (root / "item.json").write_text(json.dumps(item))
    return root / "item.json"


@pytest.mark.slow
def test_a_remote_stac_item_opens_the_network_for_its_own_assets_only(
    tmp_path, checkpoint, listener, capsys
) -> None:
    with RangeServer(tmp_path / "served") as server:
        served_item(tmp_path / "served")
        url = server.url("item.json")
        other = hostile("tile index of a /vsicurl/ tile", tmp_path / "local", listener)
        common = ["--checkpoint", checkpoint, "--tile", "32", "--quiet"]
        code = main(
            [str(a) for a in ["predict", other, "--stac-item", url, "--output", tmp_path / "o", *common]]
        )
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and f"{other}: reading it needs the network" in lines[0], lines
        assert listener.close() == 0 and not (tmp_path / "o").exists()
        # the item alone: its assets are read from the server
        code = main([str(a) for a in ["predict", "--stac-item", url, "--output", tmp_path / "o", *common]])
        assert code == 0, capsys.readouterr().err
        assert (tmp_path / "o" / "served.tif").exists()
        assert all(server.requests_for(f"{n}.tif") for n in RGB)


@pytest.mark.slow
def test_an_existing_output_that_reaches_for_the_network_is_not_opened_unasked(
    tmp_path, checkpoint, listener, capsys
) -> None:
    scene = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 32, 32, seed=2))
    out = tmp_path / "out"
    # a VRT of a tile index under the name of the class map: GDAL opens by content, whatever the name
    index = hostile("tile index of a /vsicurl/ tile", tmp_path, listener)
    vrt_of(out / "scene.tif", f"GTI:{index}")
    args = ["predict", scene, "--checkpoint", checkpoint, "--output", out, "--tile", "32", "--quiet"]
    code = main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "scene.tif" in lines[0] and "needs the network" in lines[0], (
        lines
    )
    assert listener.close() == 0
