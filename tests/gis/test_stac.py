"""STAC in and out: predict --stac-item picks the checkpoint's bands from a local static catalogue
written with pystac (one asset per band, one multi-band asset, both), once served over HTTP by the
range server, and predict --stac-out writes an Item per output. Predictions equal the direct file's."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds

from tests.helpers import require

pystac = require("pystac")

from bicorseg.checkpoint import save_checkpoint  # noqa: E402
from bicorseg.cli.main import main  # noqa: E402
from bicorseg.errors import InputError  # noqa: E402
from bicorseg.gis.stac import read_item, select_bands  # noqa: E402
from bicorseg.models import BiCoRSeg  # noqa: E402
from tests.helpers.inference import CLASSES, PALETTE, random_image, spec, write_geotiff  # noqa: E402
from tests.helpers.models import tiny_config  # noqa: E402
from tests.helpers.range_server import RangeServer  # noqa: E402

RGB = ("red", "green", "blue")
WHEN = datetime(2024, 6, 1, 10, 30, tzinfo=timezone.utc)
TILED = dict(tiled=True, blockxsize=64, blockysize=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = BiCoRSeg(
        tiny_config(), dataset=spec(3).with_bands(RGB, (120.0, 123.0, 126.0), (50.0, 51.0, 52.0))
    )
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "rgb.ckpt")


def _bands(*names: str, ids: tuple[str, ...] | None = None) -> list[dict]:
    """``eo:bands`` entries as STAC 1.0 writes them."""
    return [{"name": (ids or names)[i], "common_name": n} for i, n in enumerate(names)]


def _bands_v11(*names: str) -> list[dict]:
    """``bands`` entries as STAC 1.1 writes them (the common name under ``eo:common_name``)."""
    return [{"name": f"band{i + 1}", "eo:common_name": n} for i, n in enumerate(names)]


def _item(item_id: str, assets: dict[str, tuple[Path, list[dict] | None, list[str]]]) -> pystac.Item:
    item = pystac.Item(
        item_id,
        geometry={"type": "Point", "coordinates": [15.0, 45.0]},
        bbox=[15.0, 45.0, 15.0, 45.0],
        datetime=WHEN,
        properties={},
    )
    for key, (path, bands, roles) in assets.items():
        asset = pystac.Asset(str(path), media_type=pystac.MediaType.GEOTIFF, roles=roles)
        if bands is not None:
            asset.extra_fields["bands" if "eo:common_name" in bands[0] else "eo:bands"] = bands
        item.add_asset(key, asset)
    return item


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """scene.tif (R, G, B) and the same pixels as red/green/blue.tif and bgr.tif (B, G, R), in a catalogue."""
    root = tmp_path_factory.mktemp("stac")
    data = random_image(3, 96, 128, seed=7)
    data[:, :10, :12] = 0  # nodata in every band
    write_geotiff(root / "direct" / "scene.tif", data, nodata=0, **TILED)
    files = root / "catalog" / "files"
    for i, name in enumerate(RGB):
        write_geotiff(files / f"{name}.tif", data[i : i + 1], nodata=0, **TILED)
    write_geotiff(files / "bgr.tif", data[::-1].copy(), nodata=0, **TILED)
    (files / "thumb.png").write_bytes(b"not read")
    single = {
        n: (files / f"{n}.tif", _bands(n, ids=(f"B0{4 - i}",)), ["data", "reflectance"])
        for i, n in enumerate(RGB)
    }
    multi = {"image": (files / "bgr.tif", _bands_v11("blue", "green", "red"), ["data"])}
    thumb = {"thumbnail": (files / "thumb.png", None, ["thumbnail"])}
    catalog = pystac.Catalog("test", "bicorseg test catalogue")
    catalog.add_item(_item("per-band", {**single, **thumb}))
    catalog.add_item(_item("multi", multi))
    catalog.add_item(_item("keys", {n: (files / f"{n}.tif", None, ["data"]) for n in RGB}))  # no band lists
    catalog.add_item(
        _item("twice", {**multi, "visual": (files / "bgr.tif", _bands("blue", "green", "red"), ["visual"])})
    )
    catalog.normalize_hrefs(str(root / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root


def item_file(catalogue: Path, item_id: str) -> Path:
    return catalogue / "catalog" / item_id / f"{item_id}.json"


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def predicted(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with rasterio.open(path) as src:
        classes, meta = src.read(), {"crs": src.crs, "transform": src.transform, "nodata": src.nodata}
    with rasterio.open(path.with_name(path.stem + "_prob.tif")) as src:
        return classes, src.read(), meta


@pytest.fixture(scope="module")
def direct(catalogue, checkpoint, tmp_path_factory) -> tuple[np.ndarray, np.ndarray, dict]:
    out = tmp_path_factory.mktemp("direct")
    args = ["predict", catalogue / "direct" / "scene.tif", "--checkpoint", checkpoint, "--output", out]
    assert main([str(a) for a in args] + ["--tile", "64", "--probabilities", "--quiet"]) == 0
    return predicted(out / "scene.tif")


def test_the_rule_picks_bands_by_common_name_then_key(catalogue) -> None:
    per_band = select_bands(read_item(item_file(catalogue, "per-band")), RGB, 3)
    assert [(s.asset, s.band) for s in per_band] == [
        ("red", 1),
        ("green", 1),
        ("blue", 1),
    ]  # thumbnail skipped
    multi = select_bands(read_item(item_file(catalogue, "multi")), RGB, 3)
    assert [(s.asset, s.band) for s in multi] == [("image", 3), ("image", 2), ("image", 1)]
    assert multi[0].href == str(catalogue / "catalog" / "files" / "bgr.tif")  # relative href resolved
    keys = select_bands(read_item(item_file(catalogue, "keys")), RGB, 3)
    assert [s.asset for s in keys] == list(RGB)
    nir = ("nir", "red", "green")
    with pytest.raises(InputError, match=r"no asset holds the band 'nir' the checkpoint takes"):
        select_bands(read_item(item_file(catalogue, "per-band")), nir, 3)
    with pytest.raises(InputError, match=r"the assets image, visual each hold the bands red, green, blue"):
        select_bands(read_item(item_file(catalogue, "twice")), RGB, 3)
    chosen = select_bands(read_item(item_file(catalogue, "twice")), RGB, 3, assets=["visual"])
    assert {s.asset for s in chosen} == {"visual"}
    bare = select_bands(read_item(item_file(catalogue, "per-band")), None, 3, assets=["blue", "green", "red"])
    assert [s.asset for s in bare] == ["blue", "green", "red"]  # no band names: the assets in the order given


@pytest.mark.slow
@pytest.mark.parametrize("item_id", ["per-band", "multi"])
def test_predict_stac_item_equals_the_direct_file(
    item_id, catalogue, checkpoint, direct, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "predict", "--stac-item", item_file(catalogue, item_id), "--checkpoint", checkpoint,
                    "--output", out, "--tile", "64", "--probabilities", "--stac-out")  # fmt: skip
    assert code == 0, err
    classes, probabilities, meta = predicted(out / f"{item_id}.tif")
    np.testing.assert_array_equal(classes, direct[0])
    np.testing.assert_array_equal(probabilities, direct[1])
    assert meta == direct[2]
    assert (classes[0, :10, :12] == 255).all()  # the assets' nodata is kept through the stack
    # the STAC Item of the output
    item = pystac.Item.from_file(str(out / f"{item_id}_item.json"))
    assert item.id == item_id and item.datetime == WHEN  # the source's acquisition time
    with rasterio.open(out / f"{item_id}.tif") as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        shape, transform = [src.height, src.width], src.transform
    assert np.allclose(item.bbox, [west, south, east, north], atol=1e-9)
    ring = np.asarray(item.geometry["coordinates"][0])
    assert item.geometry["type"] == "Polygon" and (ring[0] == ring[-1]).all() and len(ring) == 65
    assert ring[:, 0].min() == pytest.approx(west) and ring[:, 1].max() == pytest.approx(north)
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    projection = ProjectionExtension.ext(item)
    assert projection.epsg == 32633 and projection.shape == shape
    assert projection.transform == [
        transform.a,
        transform.b,
        transform.c,
        transform.d,
        transform.e,
        transform.f,
    ]
    asset = item.assets["classes"]
    assert asset.href.endswith(f"{item_id}.tif") and (out / Path(asset.href).name).is_file()
    classes_ext = ClassificationExtension.ext(asset).classes
    assert [c.value for c in classes_ext] == [0, 1, 2, 3, 255]
    assert [c.description for c in classes_ext[:4]] == list(CLASSES)
    assert [c.color_hint for c in classes_ext[:4]] == ["".join(f"{v:02X}" for v in p) for p in PALETTE]
    assert classes_ext[4].nodata is True
    assert "probabilities" in item.assets
    links = [link for link in item.links if link.rel == "derived_from"]
    assert [link.get_absolute_href() for link in links] == [str(item_file(catalogue, item_id))]
    assert len(item.properties["bicorseg:checkpoint_sha256"]) == 64


@pytest.mark.slow
def test_a_served_catalogue_is_read_over_http(catalogue, checkpoint, direct, tmp_path, capsys) -> None:
    with RangeServer(catalogue / "catalog") as server:
        url = server.url("per-band/per-band.json")
        code, err = run(capsys, "predict", "--stac-item", url, "--checkpoint", checkpoint, "--output",
                        tmp_path / "out", "--tile", "64", "--probabilities", "--quiet")  # fmt: skip
        assert code == 0, err
        classes, probabilities, _ = predicted(tmp_path / "out" / "per-band.tif")
        np.testing.assert_array_equal(classes, direct[0])
        np.testing.assert_array_equal(probabilities, direct[1])
        for name in RGB:  # the assets were read from the server, in ranges
            gets = [r for r in server.requests_for(f"files/{name}.tif") if r.method == "GET"]
            assert gets and all(r.range and r.status == 206 for r in gets), server.requests
        assert not server.requests_for("files/thumb.png")


def test_a_local_item_with_remote_assets_needs_allow_remote(catalogue, checkpoint, tmp_path, capsys) -> None:
    with RangeServer(catalogue / "catalog") as server:
        data = json.loads(item_file(catalogue, "per-band").read_text())
        for key in RGB:
            data["assets"][key]["href"] = server.url(f"files/{key}.tif")
        local = tmp_path / "remote-assets.json"
        local.write_text(json.dumps(data))
        code, err = run(
            capsys, "predict", "--stac-item", local, "--checkpoint", checkpoint, "--output", tmp_path / "o"
        )
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, err
        assert f"{local} (asset red): refers to the remote source {server.url('files/red.tif')}" in lines[0]
        assert "--allow-remote" in lines[0] and server.requests == [] and not (tmp_path / "o").exists()
        # the other way round: a served item whose asset is a local file is refused too (an absolute
        # path is resolved against the item's URL, so only a file:// href names a local file)
        data["assets"]["red"]["href"] = (catalogue / "catalog" / "files" / "red.tif").as_uri()
        (catalogue / "catalog" / "hostile.json").write_text(json.dumps(data))
        url = server.url("hostile.json")
        code, err = run(
            capsys, "predict", "--stac-item", url, "--checkpoint", checkpoint, "--output", tmp_path / "o"
        )
        assert code == 2 and f"{url}: asset red of a remote item is the local file" in err, err
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("item_id", "extra", "message"),
    [
        (
            "twice",
            [],
            "the assets image, visual each hold the bands red, green, blue: choose one with --stac-assets",
        ),
        ("multi", ["--stac-assets", "nothing"], "--stac-assets: "),
    ],
)
def test_ambiguous_or_wrong_assets_are_one_line(
    item_id, extra, message, catalogue, checkpoint, tmp_path, capsys
) -> None:
    code, err = run(capsys, "predict", "--stac-item", item_file(catalogue, item_id), "--checkpoint", checkpoint,
                    "--output", tmp_path / "o", *extra)  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err


def test_malformed_items_are_one_line(tmp_path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputError, match=r"a\.json: not a JSON STAC item"):
        read_item(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match=r"b\.json: not a STAC Item"):
        read_item(tmp_path / "b.json")
    with pytest.raises(InputError, match="STAC item not found"):
        read_item(tmp_path / "missing.json")


def test_an_item_for_a_plain_input_has_no_source_link_and_the_prediction_time(tmp_path) -> None:
    from bicorseg.gis.stac import write_output_item

    raster = write_geotiff(tmp_path / "plain.tif", np.zeros((1, 16, 24), np.uint8), nodata=255)
    with rasterio.open(raster, "r+") as dst:
        dst.update_tags(bicorseg_classes=json.dumps(["a b", "c"]), bicorseg_settings="tile=64")
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
    before = datetime.now(timezone.utc)
    target = write_output_item(raster, {"color": tmp_path / "plain_color.tif"})
    assert target == tmp_path / "plain_item.json"
    item = pystac.Item.from_file(str(target))
    assert before <= item.datetime <= datetime.now(timezone.utc)
    assert not [link for link in item.links if link.rel == "derived_from"]
    assert item.properties["bicorseg:settings"] == "tile=64"
    assert item.assets["color"].roles == ["visual"]
    from pystac.extensions.classification import ClassificationExtension

    entries = ClassificationExtension.ext(item.assets["classes"]).classes
    assert [(c.value, c.name, c.description, c.color_hint) for c in entries[:2]] == [
        (0, "a_b", "a b", "FF0000"),
        (1, "c", "c", "0000FF"),
    ]
    no_crs = tmp_path / "picture.tif"
    with (
        pytest.warns(NotGeoreferencedWarning),
        rasterio.open(no_crs, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst,
    ):
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="has no CRS and transform"):
        write_output_item(no_crs)
