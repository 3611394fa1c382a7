"""STAC items as training rasters: their assets stacked by band name, as predict --stac-item reads them."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from bicorseg.data.geo import GeoSource
from bicorseg.errors import ConfigError
from tests.helpers import require
from tests.helpers.geo import write_scene, write_truth

pystac = require("pystac")  # the optional extra "cloud"


def _item(folder, scene):
    """A STAC item whose three assets are the scene's bands, one file each, listed blue, green, red."""
    with rasterio.open(scene) as src:
        data, profile = src.read(), src.profile
    profile.update(count=1, photometric="MINISBLACK")
    item = pystac.Item("scene", geometry=None, bbox=None, datetime=datetime(2025, 6, 1, 10), properties={})
    for index, name in reversed(list(enumerate(("red", "green", "blue")))):
        path = folder / f"B{index}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data[index : index + 1])
        asset = pystac.Asset(str(path), media_type=pystac.MediaType.GEOTIFF, roles=["data"])
        asset.extra_fields["eo:bands"] = [{"name": f"B{index}", "common_name": name}]
        item.add_asset(f"B{index}", asset)
    target = folder / "item.json"
    item.save_object(dest_href=str(target), include_self_link=False)
    return target, data


def test_a_stac_item_trains_like_its_stacked_raster(tmp_path):
    scene, mask, transform = write_scene(tmp_path, 128, seed=4)
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform)
    item, data = _item(tmp_path, scene)
    source = GeoSource([str(item)], labels, label_field="class", stac_bands=["red", "green", "blue"])
    assert source.spec.bands == ("red", "green", "blue")  # the names predict --stac-item picks again
    image, burned = source.read(0, Window(0, 0, 128, 128))
    assert np.array_equal(image, data.astype(np.float32))  # red, green, blue: not the item's order
    plain = GeoSource([scene], labels, label_field="class")
    assert np.array_equal(burned, plain.read(0, Window(0, 0, 128, 128))[1])
    scratch = source.scratch.path
    source.close()
    assert not scratch.exists()  # the VRT goes with the indexed polygons
    with pytest.raises(ConfigError, match="name the bands to read from the STAC items") as error:
        GeoSource([str(item)], labels, label_field="class")
    assert error.value.key == "data.stac_bands"
