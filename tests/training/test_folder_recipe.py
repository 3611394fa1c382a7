"""The ``folder`` recipe: your own images and masks, a seeded validation split that never reaches training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg.errors import ConfigError
from bicorseg.training.config import dataset_spec, load_config
from bicorseg.training.datamodule import SegmentationDataModule, held_out
from tests.helpers.processes import cli_subprocess
from tests.helpers.training import REPO

FOLDER = REPO / "configs" / "folder.yaml"
TABLE = "classes:\n  - {name: red, colour: '#FF0000'}\n  - {name: blue, colour: '#0000FF'}\n"


def _write_folder(root: Path, tiles: int = 2, per_tile: int = 5, size: int = 64) -> dict[str, int]:
    """``root/Tile t/images/part_k.png`` with a colour mask each; every image one grey level of its own.

    Returns sample name -> the image's grey level (10, 30, 50, ...).
    """
    levels = {}
    for t in range(tiles):
        for k in range(per_tile):
            level = 10 + 20 * len(levels)
            name = f"Tile {t + 1}/images/part_{k}"
            (root / f"Tile {t + 1}" / "images").mkdir(parents=True, exist_ok=True)
            (root / f"Tile {t + 1}" / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size, 3), level, np.uint8)).save(root / f"{name}.png")
            mask = np.zeros((size, size, 3), np.uint8)
            mask[:, : size // 2] = (255, 0, 0)
            mask[:, size // 2 :] = (0, 0, 255)
            Image.fromarray(mask).save(root / f"Tile {t + 1}" / "masks" / f"part_{k}.png")
            levels[name] = level
    (root / "classes.yaml").write_text(TABLE)
    return levels


def _module(root: Path, **overrides) -> SegmentationDataModule:
    base = {
        "data.root": str(root),
        "data.class_table": str(root / "classes.yaml"),
        "data.num_workers": 0,
        "data.batch_size": 4,  # the fixture's 5 to 8 training images
    }
    config = load_config(FOLDER, {**base, **overrides})
    module = SegmentationDataModule(config.data, dataset_spec(config.data), seed=config.trainer.seed)
    module.setup("fit")
    return module


def _names(dataset) -> list[str]:
    return [dataset.sample_name(i) for i in range(len(dataset))]


def test_seeded_fraction_is_held_out_of_training(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    module = _module(tmp_path)
    train, val = _names(module.train_set), _names(module.val_set)
    assert len(val) == 2 and len(train) == 8  # 20 % of 10
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(_names(_module(tmp_path, **{"data.val_fraction": 0.5}).train_set)
                                         + _names(_module(tmp_path, **{"data.val_fraction": 0.5}).val_set))  # fmt: skip
    # the same draw for another training seed; another val_seed draws other samples
    assert _names(_module(tmp_path, **{"trainer.seed": 7}).val_set) == val
    draws = {tuple(_names(_module(tmp_path, **{"data.val_seed": s}).val_set)) for s in range(6)}
    assert len(draws) > 1


def test_held_out_draw_ignores_listing_order() -> None:
    names = [f"Tile {t}/images/part_{k}" for t in range(3) for k in range(7)]
    chosen = {names[i] for i in held_out(names, 0.25, seed=3)}
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    assert {shuffled[i] for i in held_out(shuffled, 0.25, seed=3)} == chosen
    assert len(chosen) == 5  # round(0.25 * 21)
    assert len(held_out(names[:2], 0.9, seed=0)) == 1  # never all of them


def test_validation_samples_by_folder_name(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    module = _module(tmp_path, **{"data.val_fraction": None, "data.val_samples": ["Tile 2"]})
    assert all(n.startswith("Tile 2/") for n in _names(module.val_set)) and len(module.val_set) == 5
    assert all(n.startswith("Tile 1/") for n in _names(module.train_set)) and len(module.train_set) == 5


def test_a_mosaic_never_shows_a_held_out_image(tmp_path: Path) -> None:
    levels = _write_folder(tmp_path)
    module = _module(
        tmp_path,
        **{
            "data.crop_size": 32,
            "data.batch_size": 2,
            "data.augment": {"scales": [1.0], "mosaic_p": 1.0, "crop_retries": 0},
        },
    )
    held = {levels[n] for n in _names(module.val_set)}
    trained = {levels[n] for n in _names(module.train_set)}
    spec = module.train_set.spec
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    seen: set[int] = set()
    for _ in range(3):
        for i in range(len(module.train_set)):
            raw = module.train_set[i]["image"] * std + mean
            seen |= {int(v) for v in torch.round(raw[0]).unique().tolist()}
    assert seen - {0} <= trained  # 0: mosaic padding
    assert not seen & held
    assert len(seen - {0}) > 4  # the mosaics really mixed images


def test_validation_that_would_score_training_images_is_refused(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.val_split: 'all' is also a training split"):
        load_config(FOLDER, {"data.root": str(tmp_path), "data.val_fraction": None})
    with pytest.raises(ConfigError, match=r"^data\.train_samples: sample 'Tile 1/images/part_0' is both"):
        _module(tmp_path, **{"data.val_fraction": None, "data.val_samples": ["part_0"],
                             "data.train_samples": ["Tile 1"]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: must be in \(0, 1\)"):
        load_config(FOLDER, {"data.root": str(tmp_path), "data.val_fraction": 1.0})
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: holds out part of a training split"):
        load_config(FOLDER, {"data.root": str(tmp_path), "data.val_split": "val"})


def test_loveda_cpu_needs_its_data_root() -> None:
    with pytest.raises(ConfigError, match=r"^data\.root: is required"):
        load_config(REPO / "configs" / "loveda-cpu.yaml")


def test_loveda_cpu_trains_on_every_scene_but_the_held_out_ones(tmp_path: Path) -> None:
    """On a Rural folder larger than the 16-scene sample (the full release), the recipe trains on
    every scene but 12-15 (112 included: a name must equal 12, not end with it)."""
    scenes = [*range(20), 112]
    for folder in ("images_png", "masks_png"):
        (tmp_path / folder).mkdir()
    for scene in scenes:
        Image.fromarray(np.full((32, 32, 3), scene, np.uint8)).save(tmp_path / "images_png" / f"{scene}.png")
        Image.fromarray(np.full((32, 32), 1 + scene % 7, np.uint8)).save(
            tmp_path / "masks_png" / f"{scene}.png"
        )
    config = load_config(
        REPO / "configs" / "loveda-cpu.yaml", {"data.root": str(tmp_path), "data.num_workers": 0}
    )
    module = SegmentationDataModule(config.data, dataset_spec(config.data), seed=config.trainer.seed)
    module.setup("fit")
    trained = {int(name.rsplit("/", 1)[1]) for name in _names(module.train_set)}
    assert trained == set(scenes) - {12, 13, 14, 15}
    assert sorted(int(name.rsplit("/", 1)[1]) for name in _names(module.val_set)) == [12, 13, 14, 15]


@pytest.mark.slow
def test_folder_recipe_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_folder(data, size=96)
    run = tmp_path / "runs" / "x"
    result = cli_subprocess(
        "train", "--config", "folder", "--data.root", data, "--data.class_table", data / "classes.yaml",
        "--output", run, "--data.crop_size", "64", "--data.batch_size", "4", "--model.width", "32", "--data.num_workers", "0",
        "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (run / "checkpoints" / "best.ckpt").is_file()
    held = next(line for line in result.stderr.splitlines() if line.startswith("held out for validation"))
    assert len(held.split(": ", 1)[1].split(", ")) == 2 and "Tile " in held  # 20 % of 10, named
    report = json.loads((run / "val_metrics.json").read_text())
    assert report["convention"]["split"] == "all"
    assert len(report["per_class"]) == 2
