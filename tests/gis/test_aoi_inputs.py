"""Areas of interest from strangers: no network unasked, no CRS guessed, no empty area taken for an answer.

Each hostile AOI file is first read with plain pyogrio to show that GDAL really reaches a loopback
listener for it; then by ``bicorseg areas --aoi``, which must refuse it in one line while the
listener sees no connection. With ``--allow-remote`` the same kind of file (its CRS a link to a
served WKT) is read and counts what a local AOI counts.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import require

pyogrio = require("pyogrio")
shapely = require("shapely")

from pyproj import CRS  # noqa: E402

from bicorseg.cli.main import main  # noqa: E402
from bicorseg.errors import InputError  # noqa: E402
from bicorseg.gis.aoi import AreaOfInterest  # noqa: E402
from tests.helpers.gis import write_class_raster  # noqa: E402
from tests.helpers.network import Listener  # noqa: E402
from tests.helpers.range_server import RangeServer  # noqa: E402

X0, Y0 = 500_000.0, 5_000_000.0  # the class raster's corner (EPSG:32633, 0.5 m pixels)
UTM = CRS.from_epsg(32633)
GRID = __import__("rasterio").Affine(0.5, 0, X0, 0, -0.5, Y0)  # the class raster's pixel grid
SQUARE = [[X0, Y0 - 10.0], [X0 + 10.0, Y0 - 10.0], [X0 + 10.0, Y0], [X0, Y0], [X0, Y0 - 10.0]]


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def geojson(path: Path, crs: dict | None, ring: list = SQUARE) -> Path:
    data: dict = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    ]}  # fmt: skip
    if crs is not None:
        data["crs"] = crs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def link(href: str) -> dict:
    return {"type": "link", "properties": {"href": href, "type": "ogcwkt"}}


def hostile(kind: str, folder: Path, listener: Listener) -> Path:
    """An AOI file that makes GDAL reach ``listener`` by itself."""
    if kind == "GeoJSON whose CRS is a link":
        return geojson(folder / "link.geojson", link(listener.url("crs.wkt")))
    if kind == "GeoJSON whose CRS link is spelled with a JSON escape":
        path = geojson(folder / "escaped.geojson", link(listener.url("crs.wkt")))
        path.write_text(path.read_text().replace("http://", "http\\u003a//"))
        return path
    if kind == "OGR VRT whose layer is a URL":
        inner = listener.url("layer.geojson")
    elif kind == "OGR VRT of a local GeoJSON whose CRS is a link":
        inner = str(geojson(folder / "inner.geojson", link(listener.url("crs.wkt"))))
    else:
        raise AssertionError(kind)
    path = folder / "layers.vrt"
    path.write_text(
        '<OGRVRTDataSource><OGRVRTLayer name="aoi">'
        f"<SrcDataSource>{inner}</SrcDataSource><SrcLayer>{Path(inner).stem}</SrcLayer>"
        "</OGRVRTLayer></OGRVRTDataSource>"
    )
    return path


CASES = [
    "GeoJSON whose CRS is a link",
    "GeoJSON whose CRS link is spelled with a JSON escape",
    "OGR VRT whose layer is a URL",
    "OGR VRT of a local GeoJSON whose CRS is a link",
]


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_class_raster(tmp_path / "classes.tif", np.ones((100, 100), np.uint8))


@pytest.mark.parametrize("kind", CASES)
def test_gdal_itself_reaches_the_listener_for_each_aoi(kind, tmp_path, listener) -> None:
    path = hostile(kind, tmp_path, listener)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pyogrio.raw.read(path)
        except Exception:  # only the connection matters here
            pass
    assert listener.close() > 0, f"{kind}: GDAL did not reach the network, so the case shows nothing"


@pytest.mark.parametrize("kind", CASES)
def test_an_aoi_that_reaches_for_the_network_is_refused_in_one_line(
    kind, tmp_path, listener, raster, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("BICORSEG_ALLOW_REMOTE", raising=False)
    monkeypatch.setenv("no_proxy", "*")
    path = hostile(kind, tmp_path, listener)
    code, lines = run(capsys, "areas", raster, "--aoi", path, "--output", tmp_path / "areas.json")
    assert code == 2 and len(lines) == 1, lines
    assert str(path) in lines[0] and "remote access is off" in lines[0] and "--allow-remote" in lines[0]
    assert listener.close() == 0 and not (tmp_path / "areas.json").exists()


def test_an_aoi_whose_crs_is_a_served_link_is_read_when_allowed(tmp_path, raster, capsys) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "crs.wkt").write_text(UTM.to_wkt("WKT1_GDAL"))
    with RangeServer(served) as server:
        remote = geojson(tmp_path / "link.geojson", link(server.url("crs.wkt")))
        local = geojson(tmp_path / "local.geojson", {"type": "name", "properties": {"name": "EPSG:32633"}})
        code, lines = run(capsys, "areas", raster, "--aoi", remote, "--output", tmp_path / "a.json")
        assert code == 2 and server.requests == [], lines
        for aoi, out in ((remote, "remote.json"), (local, "local.json")):
            code, lines = run(
                capsys, "areas", raster, "--aoi", aoi, "--output", tmp_path / out, "--allow-remote"
            )
            assert code == 0, lines
        assert server.requests_for("crs.wkt")
        counts = [
            json.loads((tmp_path / n).read_text())["total_pixels"] for n in ("remote.json", "local.json")
        ]
        assert counts == [400, 400]  # 10 m x 10 m of 0.5 m pixels, placed by the fetched CRS


def test_geojson_without_a_crs_is_read_as_wgs84_and_says_so(tmp_path) -> None:
    ring = [[15.0, 45.0], [15.001, 45.0], [15.001, 45.001], [15.0, 45.0]]
    path = geojson(tmp_path / "plain.geojson", None, ring)
    with pytest.warns(
        UserWarning, match=r"plain\.geojson declares no CRS: read as WGS 84 longitude/latitude"
    ):
        polygons = AreaOfInterest.read(path, UTM, GRID).polygons
    # placed as longitude/latitude: near 15 E 45 N in UTM 33, not at (15, 45) metres
    x, y = shapely.get_coordinates(polygons[0])[0]
    assert 400_000 < x < 600_000 and 4_900_000 < y < 5_100_000
    named = geojson(tmp_path / "named.geojson", {"type": "name", "properties": {"name": "EPSG:32633"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a declared CRS: nothing to say
        AreaOfInterest.read(named, UTM, GRID)


def test_an_aoi_that_holds_no_pixel_is_refused_naming_both_extents(tmp_path, raster, capsys) -> None:
    far = [[X0 + 1000, Y0 - 10], [X0 + 1010, Y0 - 10], [X0 + 1010, Y0], [X0 + 1000, Y0], [X0 + 1000, Y0 - 10]]
    path = geojson(tmp_path / "far.geojson", {"type": "name", "properties": {"name": "EPSG:32633"}}, far)
    code, lines = run(capsys, "areas", raster, "--aoi", path, "--output", tmp_path / "areas.json")
    assert code == 2 and len(lines) == 1, lines
    assert re.search(
        r"AOI .*far\.geojson holds no pixel of .*classes\.tif: the AOI's extent \(501000, 4\.99999e\+06, "
        r"501010, 5e\+06\) and the raster's \(500000, 4\.99995e\+06, 500050, 5e\+06\)",
        lines[0],
    ), lines
    assert not (tmp_path / "areas.json").exists()
    # a sliver between pixel centres overlaps the raster but holds no pixel: refused too
    sliver = [[X0 + 0.3, Y0 - 10], [X0 + 0.4, Y0 - 10], [X0 + 0.4, Y0], [X0 + 0.3, Y0], [X0 + 0.3, Y0 - 10]]
    path = geojson(
        tmp_path / "sliver.geojson", {"type": "name", "properties": {"name": "EPSG:32633"}}, sliver
    )
    with pytest.raises(InputError, match="holds no pixel"):
        AreaOfInterest.read(path, UTM, GRID, shape=(100, 100))


def test_an_aoi_of_several_layers_names_one(tmp_path) -> None:
    path = tmp_path / "areas.gpkg"
    far = shapely.box(X0 + 1000, Y0 - 10, X0 + 1010, Y0)
    for layer, polygon in (("far", far), ("near", shapely.Polygon(SQUARE))):
        wkb = np.array([shapely.to_wkb(polygon)], dtype=object)
        pyogrio.raw.write(
            path, wkb, [], [], layer=layer, geometry_type="Polygon", driver="GPKG", crs="EPSG:32633"
        )
    with pytest.raises(
        InputError, match=r"AOI: .*areas\.gpkg holds 2 layers \(far, near\): name one as .*\|layername=NAME"
    ):
        AreaOfInterest.read(path, UTM, GRID, shape=(100, 100))
    area = AreaOfInterest.read(f"{path}|layername=near", UTM, GRID, shape=(100, 100))
    assert int(area.mask(0, 0, 100, 100).sum()) == 400  # 10 m x 10 m of 0.5 m pixels
    with pytest.raises(InputError, match=r"has no layer 'nowhere' \(layers: far, near\)"):
        AreaOfInterest.read(f"{path}|layername=nowhere", UTM, GRID)


@pytest.mark.slow
def test_predict_refuses_an_aoi_that_holds_no_pixel_of_an_input(tmp_path, capsys) -> None:
    from tests.helpers.inference import random_image, tiny_checkpoint, write_geotiff

    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    source = write_geotiff(tmp_path / "in" / "scene.tif", random_image(3, 32, 32))  # 8 m x 8 m at 25 cm
    far = [[X0 + 100, Y0 - 10], [X0 + 110, Y0 - 10], [X0 + 110, Y0], [X0 + 100, Y0], [X0 + 100, Y0 - 10]]
    aoi = geojson(tmp_path / "far.geojson", {"type": "name", "properties": {"name": "EPSG:32633"}}, far)
    code, lines = run(capsys, "predict", source, "--checkpoint", checkpoint, "--output", tmp_path / "out",
                      "--tile", "32", "--aoi", aoi)  # fmt: skip
    assert code == 2 and len(lines) == 1 and "far.geojson holds no pixel of" in lines[0], lines
    assert "scene.tif" in lines[0] and "(500000, 4.99999e+06, 500008, 5e+06)" in lines[0], lines
    assert not (tmp_path / "out").exists()
