"""Remote rasters: URLs and /vsi... paths read through GDAL's network file systems.

Every test serves real GeoTIFFs from a range-capable HTTP server on 127.0.0.1 (``range_server``)
and compares with the same file read from the disk: ``predict``, ``heatmaps``, ``vectorize`` and
``areas`` give the same bytes, and the server's request log shows that the reads were ranged
(no whole-file download, no folder listing, no sidecar probing).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.cli.main import main
from bicorseg.errors import InputError
from bicorseg.raster_access import (
    REMOTE_OPTIONS,
    REMOTE_PATH_OPTIONS,
    VsiPath,
    gdal_options,
    input_path,
    open_raster,
)
from tests.helpers import require
from tests.helpers.inference import random_image, write_geotiff
from tests.helpers.range_server import RangeServer

TILED = dict(tiled=True, blockxsize=128, blockysize=128, compress="deflate")


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with RangeServer(root) as server:
        yield root, server


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_urls_map_to_gdal_file_systems() -> None:
    cases = {
        "https://h.example/a/scene.tif?sig=x%2Fy": ("/vsicurl/https://h.example/a/scene.tif?sig=x%2Fy", "scene"),
        "http://127.0.0.1:8/x%20y.tif": ("/vsicurl/http://127.0.0.1:8/x%20y.tif", "x y"),
        "s3://bucket/key/s2.tif": ("/vsis3/bucket/key/s2.tif", "s2"),
        "gs://bucket/g.tif": ("/vsigs/bucket/g.tif", "g"),
        "az://container/dir/a.TIF": ("/vsiaz/container/dir/a.TIF", "a"),
        "/vsizip//vsicurl/https://h/a.zip/inner.tif": ("/vsizip//vsicurl/https://h/a.zip/inner.tif", "inner"),
        "/vsicurl?url=https%3A%2F%2Fh%2Fq.tif&use_head=no": ("/vsicurl?url=https%3A%2F%2Fh%2Fq.tif&use_head=no", "q"),
    }  # fmt: skip
    for given, (gdal, stem) in cases.items():
        path = input_path(given)
        assert isinstance(path, VsiPath) and path.gdal == gdal and path.stem == stem, (given, path)
        assert str(path) == given and path.remote
    local = input_path("/vsizip//data/x.zip/a.tif")
    assert isinstance(local, VsiPath) and not local.remote  # a virtual path that stays on the disk
    assert input_path("file:///data/x.tif") == Path("/data/x.tif")
    assert input_path("data/x.tif") == Path("data/x.tif")
    with pytest.raises(
        InputError, match=r"ftp://h/x\.tif: URLs of ftp:// are not read \(supported: https://"
    ):
        input_path("ftp://h/x.tif")
    with pytest.raises(InputError, match="names no file"):
        input_path("https://h/folder/")


def test_remote_reads_get_gdal_settings_and_the_environment_wins(monkeypatch) -> None:
    monkeypatch.delenv("BICORSEG_ALLOW_REMOTE", raising=False)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    remote = gdal_options(True, "/vsicurl/https://h/x.tif")
    assert remote["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR" and remote["VSI_CACHE"] == "TRUE"
    assert remote["GDAL_HTTP_MULTIRANGE"] == "YES" and remote["GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"] == "YES"
    assert int(remote["VSI_CACHE_SIZE"]) == 64 * 2**20 and "GDAL_HTTP_RETRY_DELAY" in remote
    assert "GDAL_HTTP_MAX_RETRY" not in remote  # the user's own setting is left in force
    local = gdal_options(True, "/data/x.vrt")  # a local VRT of remote sources keeps its sidecars
    assert "GDAL_DISABLE_READDIR_ON_OPEN" not in local and "VSI_CACHE" not in local
    assert set(REMOTE_OPTIONS) - {"GDAL_HTTP_MAX_RETRY"} <= set(local)
    off = gdal_options(False, "/vsicurl/https://h/x.tif")
    assert not (set(REMOTE_OPTIONS) | set(REMOTE_PATH_OPTIONS)) & set(off)


def test_the_test_server_answers_ranges_as_http_says(served) -> None:
    root, server = served
    (root / "f.bin").write_bytes(bytes(range(100)))

    def get(headers: dict[str, str], method: str = "GET") -> tuple[int, dict, bytes]:
        request = urllib.request.Request(server.url("f.bin"), headers=headers, method=method)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    status, headers, body = get({}, "HEAD")
    assert status == 200 and headers["Content-Length"] == "100" and body == b""
    status, headers, body = get({"Range": "bytes=10-19"})
    assert status == 206 and headers["Content-Range"] == "bytes 10-19/100" and body == bytes(range(10, 20))
    status, _, body = get({"Range": "bytes=-5"})
    assert status == 206 and body == bytes(range(95, 100))
    status, headers, body = get({"Range": "bytes=0-1,98-"})
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
    assert (
        b"Content-Range: bytes 0-1/100\r\n\r\n\x00\x01\r\n" in body and b"bytes 98-99/100\r\n\r\nbc" in body
    )
    status, headers, _ = get({"Range": "bytes=100-200"})
    assert status == 416 and headers["Content-Range"] == "bytes */100"
    status, _, body = get({"Range": "lines=1-2"})  # not a byte range: ignored, the whole file
    assert status == 200 and len(body) == 100
    assert get({}, "GET")[0] == 200  # a whole-file GET is possible, and logged as one without a range
    assert [r.range for r in server.requests if r.method == "GET"][-1] is None


@pytest.mark.slow
def test_predict_over_http_equals_the_local_file_byte_for_byte(tmp_path, served, checkpoint, capsys) -> None:
    root, server = served
    write_geotiff(root / "scene.tif", random_image(3, 200, 260, seed=3), nodata=0, **TILED)
    size = (root / "scene.tif").stat().st_size
    common = ["--checkpoint", checkpoint, "--tile", "64", "--probabilities", "--color", "--quiet"]
    code, err = run(capsys, "predict", root / "scene.tif", "--output", tmp_path / "local", *common)
    assert code == 0, err
    server.requests.clear()
    url = server.url("scene.tif")
    # a URL named on the command line is the user's request: no --allow-remote needed
    code, err = run(capsys, "predict", url, "--output", tmp_path / "remote", *common)
    assert code == 0, err
    local, remote = files(tmp_path / "local"), files(tmp_path / "remote")
    assert list(remote) == [
        "scene.qml",
        "scene.tif",
        "scene.tif.aux.xml",
        "scene_color.tif",
        "scene_prob.tif",
    ]  # styles too
    assert remote == local  # byte for byte, tags included (bicorseg_input is the name, scene.tif)
    # the reads were ranged: every GET asked for a byte range and got 206, each well under the file
    gets = [r for r in server.requests if r.method == "GET"]
    assert gets and all(r.range and r.status == 206 for r in gets), server.requests
    assert max(r.sent for r in gets) < size
    # no folder listing and no sidecar probing (x.tif.aux.xml, x.tfw, ...): only the file itself
    assert {r.path for r in server.requests} == {"/scene.tif"}
    # a rerun verifies the outputs from the URL's name and skips them
    code, err = run(capsys, "predict", url, "--output", tmp_path / "remote", *common[:-1])
    assert code == 0 and "1 already done" in err


def test_a_window_of_a_large_remote_raster_reads_a_fraction_of_it(served) -> None:
    root, server = served
    write_geotiff(root / "big.tif", random_image(3, 1024, 1024, seed=4), **TILED)
    size = (root / "big.tif").stat().st_size
    with open_raster(input_path(server.url("big.tif"))) as src:
        window = src.read(window=((256, 384), (512, 640)))
    with rasterio.open(root / "big.tif") as local:
        assert np.array_equal(window, local.read(window=((256, 384), (512, 640))))
    sent = sum(r.sent for r in server.requests)
    assert 0 < sent < size / 8, (sent, size)  # one 128 px block of 64 plus the header, not the file
    assert all(r.range for r in server.requests if r.method == "GET")


@pytest.mark.slow
def test_heatmaps_vectorize_and_areas_read_urls(tmp_path, served, checkpoint, capsys) -> None:
    require("shapely")
    root, server = served
    write_geotiff(root / "tile.tif", random_image(3, 96, 128, seed=5), nodata=0, **TILED)
    for where, source in (("local", root / "tile.tif"), ("remote", server.url("tile.tif"))):
        out = tmp_path / where
        code, err = run(
            capsys, "heatmaps", source, "--checkpoint", checkpoint, "--output", out / "h", "--tile", "64"
        )
        assert code == 0, err
        code, err = run(
            capsys, "predict", source, "--checkpoint", checkpoint, "--output", out / "p", "--tile", "64"
        )
        assert code == 0, err
    classes = tmp_path / "local" / "p" / "tile.tif"
    (root / "classes.tif").write_bytes(classes.read_bytes())
    for where, source in (("local", classes), ("remote", server.url("classes.tif"))):
        out = tmp_path / where
        code, err = run(capsys, "vectorize", source, "--output", out / "poly.geojson", "--quiet")
        assert code == 0, err
        code, err = run(capsys, "areas", source, "--output", out / "areas.json", "--quiet")
        assert code == 0, err
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert files(remote / "h") == files(local / "h")  # heatmap GeoTIFFs and the figure
    assert (remote / "poly.geojson").read_bytes() == (local / "poly.geojson").read_bytes()
    mine, theirs = (
        json.loads((remote / "areas.json").read_text()),
        json.loads((local / "areas.json").read_text()),
    )
    assert mine.pop("raster") == server.url("classes.tif") and theirs.pop("raster") == str(classes)
    assert mine == theirs
    assert all(r.range for r in server.requests if r.method == "GET")


def test_unreadable_urls_are_one_line(tmp_path, served, checkpoint, capsys) -> None:
    _, server = served
    missing = server.url("missing.tif")
    code, err = run(capsys, "predict", missing, "--checkpoint", checkpoint, "--output", tmp_path / "o")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and f"cannot read {missing}" in lines[0], err
    code, err = run(
        capsys, "predict", "ftp://h/x.tif", "--checkpoint", checkpoint, "--output", tmp_path / "o"
    )
    assert code == 2 and "ftp://h/x.tif: URLs of ftp:// are not read" in err
    assert not (tmp_path / "o").exists()


def test_a_remote_vrt_may_not_read_local_files(tmp_path, served, checkpoint, capsys) -> None:
    root, server = served
    secret = write_geotiff(tmp_path / "private" / "secret.tif", random_image(3, 32, 32))
    (root / "evil.vrt").write_text(
        '<VRTDataset rasterXSize="32" rasterYSize="32">'
        + "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">'
            f"{secret}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
            for b in (1, 2, 3)
        )
        + "</VRTDataset>"
    )
    code, err = run(
        capsys, "predict", server.url("evil.vrt"), "--checkpoint", checkpoint, "--output", tmp_path / "o"
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert (
        f"{server.url('evil.vrt')}: a remote dataset refers to the local file {secret}; refused" in lines[0]
    )
    assert not (tmp_path / "o").exists()
