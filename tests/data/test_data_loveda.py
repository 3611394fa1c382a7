"""LoveDA: prepare from a release-shaped folder of procedural pairs; on the real shared sample, class ids by known pixel counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg.atomic import sha256_file
from bicorseg.data import FolderDataset, build_dataset, get_spec
from bicorseg.data.io import read_image, read_mask
from bicorseg.data.release import prepare
from bicorseg.errors import InputError
from tests.helpers.data import load_generator
from tests.helpers.shared import shared_path

gen = load_generator()
# Pixel counts of the 16 shared Train/Rural masks, classes 0..6 after mapping raw 1..7 (no raw 0 occurs).
KNOWN_COUNTS = [3151034, 291845, 431421, 1791406, 162756, 1484143, 9464611]
# Raw values of mask 0.png: 1 background, 2 building, 3 road, 4 water, 7 agriculture.
KNOWN_MASK0 = {0: 142441, 1: 14427, 2: 19208, 3: 3888, 6: 868612}
PARTS = {("Train", "Rural"): 16, ("Val", "Rural"): 3, ("Test", "Urban"): 2}


def _class_counts(*masks: Path) -> np.ndarray:
    """Pixels per class (0..6) and ignored (7) of raw LoveDA masks (raw 1..7 are classes, 0 no-data)."""
    raw = sum(np.bincount(np.asarray(Image.open(m)).ravel(), minlength=8) for m in masks)
    return np.concatenate([raw[1:8], raw[:1]])


@pytest.fixture(scope="module")
def loveda_prepared(tmp_path_factory) -> tuple[Path, Path, object]:
    release = gen.make_loveda(None, tmp_path_factory.mktemp("loveda_release"), PARTS)
    out = tmp_path_factory.mktemp("loveda_prepared")
    return release, out, prepare("loveda", release, out)


def test_prepare_loveda_release(loveda_prepared):
    release, out, result = loveda_prepared
    manifest = json.loads((out / "manifest.json").read_text())
    train, val, test = (manifest["splits"][s] for s in ("train", "val", "test"))
    assert (train["count"], val["count"], test["count"]) == (16, 3, 2)
    expected = _class_counts(*(release / "Train/Rural/masks_png").glob("*.png"))
    assert train["pixels"] == expected[:7].tolist() and train["ignored"] == expected[7]
    assert np.count_nonzero(expected[:7]) >= 6  # the procedural pairs hold most classes
    assert manifest["found"] == {
        "train": ["Train/Rural (16 images)"],
        "val": ["Val/Rural (3 images)"],
        "test": ["Test/Urban (2 images)"],
    }
    summary = result.summary()
    assert "found for train: Train/Rural (16 images) (not found: Train/Urban)" in summary
    assert "found for test: Test/Urban (2 images) (not found: Test/Rural)" in summary
    # Whole images, copied byte for byte; the test split has no masks and keeps its file names.
    item = next(i for i in train["items"] if i["name"] == "0")
    assert item["image"] == "train/images/0.png" and item["window"] is None
    assert sha256_file(out / item["image"]) == sha256_file(release / "Train/Rural/images_png/0.png")
    counts = np.bincount(read_mask(out / item["mask"]).ravel(), minlength=8)
    expected_mask0 = _class_counts(release / "Train/Rural/masks_png/0.png")
    assert counts.tolist() == expected_mask0.tolist()
    assert [i["image"] for i in test["items"]] == ["test/images/5167.png", "test/images/5168.png"]
    assert all(i["mask"] is None for i in test["items"])
    assert manifest["spec"]["ignore_index"] == 7 and manifest["spec"]["name"] == "loveda"


def test_prepared_dataset_samples(loveda_prepared):
    release, out, _ = loveda_prepared
    dataset = build_dataset("loveda", out, "train+val")
    assert len(dataset) == 19
    sample = dataset[0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 1024, 1024)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (1024, 1024)
    spec = get_spec("loveda")
    raw = torch.from_numpy(read_image(out / "train/images/0.png").astype(np.float32))
    expected = (raw - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
    assert sample["name"] == "0" and sample["path"].endswith("train/images/0.png")
    torch.testing.assert_close(sample["image"], expected)
    assert int((sample["mask"] == 6).sum()) == _class_counts(release / "Train/Rural/masks_png/0.png")[6]
    test = build_dataset("loveda", out, "test")
    assert bool((test[1]["mask"] == 7).all()) and test[1]["name"] == "5168"
    with pytest.raises(InputError, match="holds prepared loveda data, not vaihingen"):
        build_dataset("vaihingen", out, "train")


def test_only_some_parts_and_archives(tmp_path):
    release = gen.make_loveda(None, tmp_path / "release", {("Val", "Urban"): 2}, archives=True)
    assert [p.name for p in release.iterdir()] == ["Val.zip"]
    result = prepare("loveda", release, tmp_path / "out", progress=True)
    assert (result.splits["train"].tiles, result.splits["val"].tiles, result.splits["test"].tiles) == (
        0,
        2,
        0,
    )
    assert "found for train: nothing (not found: Train/Urban, Train/Rural)" in result.summary()
    with pytest.raises(InputError, match="no image of the loveda release found"):
        prepare("loveda", tmp_path / "out", tmp_path / "out2")


def test_incomplete_and_bad_masks_are_errors(tmp_path):
    release = gen.make_loveda(None, tmp_path / "release", {("Train", "Rural"): 3})
    (release / "Train/Rural/masks_png/1.png").unlink()
    (release / "Train/Rural/images_png/2.png").unlink()
    with pytest.raises(InputError) as error:
        prepare("loveda", release, tmp_path / "out")
    text = str(error.value)
    assert f"1 label(s) without an image: {release}/Train/Rural/masks_png/2.png" in text
    assert f"no full label for image(s) {release}/Train/Rural/images_png/1.png" in text
    (release / "Train/Rural/masks_png/2.png").unlink()
    gen.shutil.copyfile(release / "Train/Rural/masks_png/0.png", release / "Train/Rural/masks_png/1.png")
    mask = read_mask(release / "Train/Rural/masks_png/0.png")
    mask[5, 6] = 9
    from PIL import Image

    Image.fromarray(mask).save(release / "Train/Rural/masks_png/0.png")
    with pytest.raises(
        InputError, match=r"masks_png/0\.png: 1 pixels have values not in the class table.*value 9"
    ):
        prepare("loveda", release, tmp_path / "out")


@pytest.mark.shared
def test_folder_dataset_reads_the_raw_release_with_a_value_table():
    root = shared_path("data", "loveda", "Train", "Rural")
    table = {
        "classes": [{"name": n, "value": v + 1} for v, n in enumerate(get_spec("loveda").class_names)],
        "ignore_values": [0],
    }
    dataset = FolderDataset(root, images="images_png", masks="masks_png", class_table=table)
    assert len(dataset) == 16 and dataset.spec.ignore_index == 7
    totals = np.zeros(8, np.int64)
    for i in range(len(dataset)):
        totals += np.bincount(dataset.load_mask(i).ravel(), minlength=8)
    assert totals[:7].tolist() == KNOWN_COUNTS and totals[7] == 0


@pytest.mark.shared
def test_prepare_of_the_real_sample_gives_its_known_class_counts(tmp_path):
    release = gen.make_loveda(shared_path("data"), tmp_path / "release", {("Train", "Rural"): 16})
    prepare("loveda", release, tmp_path / "out", splits=["train"])
    train = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]
    assert train["pixels"] == KNOWN_COUNTS and train["ignored"] == 0
    counts = np.bincount(read_mask(tmp_path / "out" / "train/masks/0.png").ravel(), minlength=8)
    assert {i: int(c) for i, c in enumerate(counts) if c} == KNOWN_MASK0
