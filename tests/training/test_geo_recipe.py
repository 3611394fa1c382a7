"""The ``geo`` recipe: training from rasters and labelled polygons, with the real training framework."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch.callbacks import Callback

from bicorseg.checkpoint import load_checkpoint
from bicorseg.errors import ConfigError
from bicorseg.training.config import load_config
from bicorseg.training.run import train
from tests.helpers.geo import NAMES, pixel_region, write_layer, write_scene, write_truth
from tests.helpers.training import REPO, cli

GEO = REPO / "configs" / "geo.yaml"
TINY = {
    "model.width": 32,
    "model.min_pixels": 4,
    "data.num_workers": 0,
    "data.crop_size": 64,
    "data.batch_size": 4,
    "data.val_block": 64,
    "trainer.accelerator": "cpu",
    "trainer.devices": 1,
    "trainer.progress_bar": False,
    "trainer.tensorboard": False,
    "trainer.log_every_n_steps": 1,
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 256 px scene labelled inside a rectangle (the labelled area), bare ground as the background."""
    folder = tmp_path_factory.mktemp("geo")
    path, mask, transform = write_scene(folder, 256, seed=7)
    area = np.zeros(mask.shape, bool)
    area[16:240, 8:200] = True
    classes = tuple(i for i, n in enumerate(NAMES) if n != "bare ground")
    labels = write_truth(folder / "labels.gpkg", mask, transform, where=area, classes=classes)
    layer = write_layer(
        folder / "area.gpkg",
        np.array([pixel_region(transform, slice(16, 240), slice(8, 200))]),
        {"id": [1]},
        crs="EPSG:3857",
    )
    return folder, path, mask, area, labels, layer


def _overrides(scene, **more):
    _, path, _, _, labels, layer = scene
    return {
        **TINY,
        "data.images": [str(path)],
        "data.labels": str(labels),
        "data.label_field": "class",
        "data.labelled_area": str(layer),
        "data.background": "bare ground",
        **more,
    }


class LossInputs(Callback):
    """Records the masks the objective receives, with the names of the chips of each batch."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []
        self.names: list[list[str]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.criterion.register_forward_pre_hook(lambda _, inputs: self.masks.append(inputs[1].clone()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.names.append(list(batch["name"]))


@pytest.mark.slow
def test_pixels_outside_the_labelled_area_never_reach_the_loss(scene, tmp_path):
    _, _, mask, area, _, _ = scene
    config = load_config(
        GEO,
        _overrides(
            scene,
            **{
                "data.augment": False,
                "data.chips_per_epoch": 12,
                "trainer.max_epochs": 1,
                "data.val_split": None,
            },
        ),
    )
    record = LossInputs()
    train(config, tmp_path / "run", callbacks=[record])
    names = config.data.classes
    assert names[0] == "bare ground"
    truth = np.array([names.index(n) for n in NAMES])[mask]
    checked = 0
    for masks, batch in zip(record.masks, record.names):
        for chip, name in zip(masks.numpy(), batch):
            row, col = (int(v) for v in re.search(r"row (\d+) col (\d+)", name).groups())
            inside = area[row : row + 64, col : col + 64]
            assert (chip[~inside] == 255).all()  # never trained outside the labelled area
            assert np.array_equal(chip[inside], truth[row : row + 64, col : col + 64][inside])
            checked += 1
    assert checked == 12


@pytest.mark.slow
def test_train_from_polygons_on_the_command_line_then_predict_and_evaluate(scene, tmp_path, capfd):
    _, path, _, area, labels, layer = scene
    run = tmp_path / "run"
    status = cli(
        "train",
        "--config",
        "geo",
        "--data.images",
        path,
        "--data.labels",
        labels,
        "--data.label_field",
        "class",
        "--data.labelled_area",
        layer,
        "--data.background",
        "bare ground",
        "--output",
        run,
        *[f"--{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in TINY.items()],
        "--data.chips_per_epoch",
        "8",
        "--trainer.max_epochs",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
    )
    assert status == 0
    err = capfd.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("rasters: 1 (3 band(s) uint8, WGS 84 / UTM zone 33N")
    assert re.search(r"^labelled pixels\s+training\s+validation$", err, re.MULTILINE)
    assert re.search(r"^bare ground\s+[\d,]+\s+[\d,]+$", err, re.MULTILINE)
    recorded = (run / "config.yaml").read_text()
    assert "classes: [bare ground, building, field, road, tree, water]" in recorded
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint.dataset.class_names == ("bare ground", "building", "field", "road", "tree", "water")
    assert (
        cli("predict", "--checkpoint", run / "checkpoints" / "last.ckpt", path, "--output", tmp_path / "out")
        == 0
    )
    with rasterio.open(tmp_path / "out" / "scene.tif") as src:
        assert json.loads(src.tags()["bicorseg_classes"]) == list(checkpoint.dataset.class_names)
        assert src.crs.to_epsg() == 32633
    # evaluate takes the same sources and scores every labelled pixel, and only those
    assert cli("evaluate", "--checkpoint", run / "checkpoints" / "last.ckpt", "--dataset", "geo", "--rasters", path,
               "--labels", labels, "--label-field", "class", "--labelled-area", layer, "--background", "bare ground",
               "--output", tmp_path / "scores.json") == 0  # fmt: skip
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert sum(c["support_pixels"] for c in scores["per_class"].values()) == area.sum()
    assert "every labelled pixel of 1 raster(s)" in scores["convention"]["labels"]
    assert scores["convention"]["split"] == "labelled"


def test_repeated_images_options_make_a_list_and_geo_keys_are_checked(scene, capsys):
    _, path, _, _, labels, _ = scene
    assert (
        cli(
            "train",
            "--config",
            "geo",
            "--data.images",
            path,
            "--data.images",
            path.parent,
            "--data.labels",
            labels,
            "--data.label_field",
            "class",
            "--print-config",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"images: [{path}, {path.parent}]" in printed
    assert "classes: [building, field, road, tree, water]" in printed  # the codes found in the labels
    config = load_config(
        GEO, {"data.images": str(path), "data.labels": str(labels), "data.label_field": "class"}
    )
    assert config.data.images == [str(path)]
    with pytest.raises(ConfigError, match="give the rasters") as error:
        load_config(GEO, {"data.labels": str(labels)})
    assert error.value.key == "data.images"
    with pytest.raises(ConfigError, match="is for geo datasets") as error:
        load_config(REPO / "configs" / "folder.yaml", {"data.root": "x", "data.label_field": "class"})
    assert error.value.key == "data.label_field"
    with pytest.raises(ConfigError, match="multiple of 64") as error:
        load_config(GEO, {"data.images": str(path), "data.labels": str(labels), "data.val_block": 100})
    assert error.value.key == "data.val_block"


def test_the_recipe_takes_a_validation_area_as_the_guide_gives_it(scene):
    """``--data.val_area`` alone replaces the validation blocks (the recipe leaves their share unset)."""
    _, path, _, _, labels, layer = scene
    given = {"data.images": str(path), "data.labels": str(labels), "data.label_field": "class"}
    config = load_config(GEO, {**given, "data.val_area": str(layer)})
    assert (config.data.val_area, config.data.val_fraction) == (str(layer), None)
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: chooses validation blocks"):
        load_config(GEO, {**given, "data.val_area": str(layer), "data.val_fraction": 0.3})
