"""``evaluate --rescale``: a split of 16-bit images scores as its 8-bit original once rescaled, and the
report's convention records the map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg import BiCoRSeg, save_checkpoint
from bicorseg.data import FolderDataset
from tests.helpers.inference import run, write_geotiff
from tests.helpers.models import tiny_config

VALUE_TABLE = {
    "name": "toy-values",
    "classes": [{"name": f"c{i}", "value": i} for i in range(4)],
    "ignore_values": [255],
}


def _folders(root: Path) -> tuple[Path, Path]:
    """The same images and masks twice: as 8-bit PNGs and as 16-bit GeoTIFFs (x 257)."""
    rng = np.random.default_rng(5)
    eight, sixteen = root / "eight", root / "sixteen"
    for folder in (eight, sixteen):
        (folder / "masks").mkdir(parents=True)
    for i in range(3):
        image = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
        mask = rng.integers(0, 4, (64, 64)).astype(np.uint8)
        Image.fromarray(image.transpose(1, 2, 0)).save(_mkdir(eight / "images") / f"{i}.png")
        write_geotiff(sixteen / "images" / f"{i}.tif", image.astype(np.uint16) * 257)
        for folder in (eight, sixteen):
            Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
    return eight, sixteen


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _scores(capsys, checkpoint: Path, root: Path, output: Path, *options: str) -> dict:
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root", root,
                       "--split", "all", "--precision", "fp32", "--output", output, *options)  # fmt: skip
    assert code == 0, err
    return json.loads(output.read_text())


@pytest.mark.slow
def test_a_16bit_split_rescaled_scores_as_its_8bit_original(tmp_path: Path, capsys) -> None:
    eight, sixteen = _folders(tmp_path)
    torch.manual_seed(0)
    spec = FolderDataset(eight, class_table=VALUE_TABLE).spec
    checkpoint = save_checkpoint(BiCoRSeg(tiny_config(num_classes=4), dataset=spec), tmp_path / "m.ckpt")
    reference = np.array(_scores(capsys, checkpoint, eight, tmp_path / "8.json")["confusion_matrix"])
    plain = np.array(_scores(capsys, checkpoint, sixteen, tmp_path / "plain.json")["confusion_matrix"])
    rescaled = _scores(capsys, checkpoint, sixteen, tmp_path / "auto.json", "--rescale", "auto")
    total = reference.sum()
    assert np.abs(plain - reference).sum() > 0.2 * total  # as they are, 16-bit values score otherwise
    # x 257 then / 257 in float32 may move a value by 1e-5, enough to flip a random model's near-tie
    assert np.abs(np.array(rescaled["confusion_matrix"]) - reference).sum() <= 0.001 * total
    identity = _scores(capsys, checkpoint, eight, tmp_path / "same.json", "--rescale", "0,255")
    assert np.array_equal(np.array(identity["confusion_matrix"]), reference)  # the map itself is exact
    assert rescaled["convention"]["rescale"].startswith("16-bit values: band ranges 0..65535")
    assert "rescale" not in json.loads((tmp_path / "8.json").read_text())["convention"]
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root",
                       sixteen, "--split", "all", "--rescale", "9,1")  # fmt: skip
    assert (
        code == 2 and err.strip() == "bicorseg evaluate: error: --rescale: MIN must be below MAX, got '9,1'"
    )
