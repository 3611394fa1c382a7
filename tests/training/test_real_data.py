"""The evaluate command and the CPU recipe's data settings on the real LoveDA sample (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bicorseg import BiCoRSeg, save_checkpoint
from bicorseg.data import get_spec, prepare, read_image, read_mask
from bicorseg.training.config import load_config
from bicorseg.training.datamodule import SegmentationDataModule
from tests.helpers.models import tiny_config
from tests.helpers.shared import shared_path
from tests.helpers.training import REPO, cli

pytestmark = pytest.mark.shared  # real data and reference outputs from ../shared


@pytest.fixture(scope="module")
def loveda_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = BiCoRSeg(tiny_config(num_classes=7), dataset=get_spec("loveda"))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "loveda.ckpt")


def _by_hand(checkpoint: Path, images: list[Path]) -> np.ndarray:
    """The confusion matrix of the first images, computed here without the evaluate machinery."""
    from bicorseg import load_model

    model, spec = load_model(checkpoint), get_spec("loveda")
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    matrix = np.zeros((7, 7), np.int64)
    for path in images:
        image = ((torch.from_numpy(read_image(path).astype(np.float32)) - mean) / std)[None]
        with torch.no_grad():
            pred = model(image)[0].argmax(0).numpy()
        raw = read_mask(Path(str(path).replace("images_png", "masks_png")))
        keep = raw > 0  # raw 0 is LoveDA's no-data
        np.add.at(matrix, (raw[keep].astype(np.int64) - 1, pred[keep]), 1)
    return matrix


@pytest.mark.slow
def test_evaluate_prepared_and_folder_loveda(loveda_checkpoint: Path, tmp_path: Path) -> None:
    source = shared_path("data", "loveda")
    images = [source / "Train" / "Rural" / "images_png" / f"{i}.png" for i in (0, 1)]
    expected = _by_hand(loveda_checkpoint, images)

    prepared = tmp_path / "prepared"
    prepare("loveda", source, prepared, splits=["train"])
    out = tmp_path / "prepared.json"
    assert cli("evaluate", "--checkpoint", loveda_checkpoint, "--dataset", "loveda", "--root", prepared,
               "--split", "train", "--limit", "2", "--batch-size", "1", "--precision", "fp32", "--output", out) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert np.array_equal(np.array(report["confusion_matrix"]), expected)  # prepared names sort 0, 1, 10...
    assert report["convention"]["label_variant"] == "full"
    assert len(report["convention"]["classes_averaged"]) == 7

    table = yaml.safe_load((REPO / "configs" / "loveda-cpu.yaml").read_text())["data"]["class_table"]
    (tmp_path / "loveda.yaml").write_text(yaml.safe_dump(table))
    out = tmp_path / "folder.json"
    assert cli("evaluate", "--checkpoint", loveda_checkpoint, "--dataset", "folder", "--root", source,
               "--split", "all", "--images", "images_png", "--masks", "masks_png", "--class-table",
               tmp_path / "loveda.yaml", "--limit", "2", "--precision", "fp32", "--output", out) == 0  # fmt: skip
    assert np.array_equal(np.array(json.loads(out.read_text())["confusion_matrix"]), expected)


def test_cpu_recipe_selects_its_samples() -> None:
    shared_path("data", "loveda")
    config = load_config(
        REPO / "configs" / "loveda-cpu.yaml",
        {"data.num_workers": 0, "data.root": str(shared_path("data", "loveda"))},
    )
    assert config.model.num_classes == 7 and config.loss.ignore_index == 7
    module = SegmentationDataModule(config.data, get_spec("loveda"))
    module.setup("fit")
    assert len(module.train_set) == 12 and len(module.val_set) == 4
    names = [module.val_set.sample_name(i) for i in range(len(module.val_set))]
    assert sorted(n.rsplit("/", 1)[-1] for n in names) == ["12", "13", "14", "15"]
    sample = module.train_set[0]
    side = config.data.crop_size
    assert sample["image"].shape == (3, side, side) and sample["mask"].shape == (side, side)
