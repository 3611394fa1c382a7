"""``bicorseg chips``: the sampler's chips and the validation windows as a folder dataset the folder recipe reads."""

from __future__ import annotations

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from bicorseg.data import build_dataset
from bicorseg.data.geo import GeoSource
from bicorseg.data.geo.rasters import map_xy
from tests.helpers.geo import write_scene, write_truth
from tests.helpers.training import cli


def test_chips_are_georeferenced_windows_with_their_labels(tmp_path, capsys):
    path, mask, transform = write_scene(tmp_path, 256, seed=2)
    labelled = np.zeros(mask.shape, bool)
    labelled[:, :200] = True
    labels = write_truth(tmp_path / "labels.gpkg", mask, transform, where=labelled)
    out = tmp_path / "chips"
    status = cli("chips", "--data.images", path, "--data.labels", labels, "--data.label_field", "class",
                 "--data.crop_size", "64", "--data.val_block", "64", "--count", "6", "--output", out)  # fmt: skip
    assert status == 0
    assert "wrote 6 training and" in capsys.readouterr().out
    train = sorted((out / "train" / "images").iterdir())
    assert len(train) == 6 and len(list((out / "train" / "masks").iterdir())) == 6
    source = GeoSource([path], labels, label_field="class")
    for chip in [*train, *sorted((out / "val" / "images").iterdir())]:
        with rasterio.open(chip) as src:
            image, chip_transform = src.read(), src.transform
            assert src.crs.to_epsg() == 32633 and image.dtype == np.uint8 and image.shape == (3, 64, 64)
        col, row = map_xy(~transform, chip_transform.c, chip_transform.f)
        window = Window(round(col), round(row), 64, 64)
        with rasterio.open(path) as src:
            assert np.array_equal(image, src.read(window=window))
        with Image.open(chip.parent.parent / "masks" / f"{chip.stem}.png") as picture:
            assert picture.mode == "P"  # a paletted PNG in the class colours
            colours = np.asarray(picture.getpalette()).reshape(-1, 3)
            assert [tuple(c) for c in colours[: source.spec.num_classes]] == list(source.spec.palette)
            assert picture.info["transparency"][255] == 0  # unlabelled: transparent
            written = np.asarray(picture)
        expected = source.read(0, window)[1]
        if "val" in chip.parts:  # only the validation area is scored
            assert set(np.unique(written[written != expected])) <= {255}
        else:
            assert np.array_equal(written, expected)
    # the folder recipe reads the chips with their class table
    dataset = build_dataset("folder", out, "train", class_table=out / "classes.yaml")
    assert dataset.spec.class_names == source.spec.class_names
    sample = dataset[0]
    assert sample["mask"].shape == (64, 64)
    with Image.open(out / "train" / "masks" / f"{train[0].stem}.png") as first:  # read as class indices
        assert np.array_equal(sample["mask"].numpy(), np.asarray(first))
    assert cli("chips", "--data.images", path, "--data.labels", labels, "--data.label_field", "class",
               "--output", out) == 2  # fmt: skip
    assert "exists and is not an empty folder" in capsys.readouterr().err
