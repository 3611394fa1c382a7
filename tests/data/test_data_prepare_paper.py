"""``prepare --protocol paper``: the original code's ISPRS preparation (padding label, flip order, car zoom)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bicorseg.cli.main import main as cli_main
from bicorseg.data.datasets import ISPRS_LABELS, VAIHINGEN, ZoomStep
from bicorseg.data.io import read_mask
from bicorseg.data.release import prepare
from bicorseg.errors import ConfigError
from tests.helpers.data import SPEC_POTSDAM, SPEC_VAIHINGEN, load_generator, spec_tiles

gen = load_generator()
SIZE = (100, 120)  # fixture tiles: padded to 128 x 128 at patch size 64
PATCH = 64
PADDED = (128, 128)
IGNORE = 6
CAR = 4


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _index_labels(path: Path) -> np.ndarray:
    mask, _ = ISPRS_LABELS.encode(read_mask(path, mode="colour"), str(path))
    return mask


def _items(out: Path, split: str = "train") -> dict[str, dict]:
    return {item["name"]: item for item in _manifest(out)["splits"][split]["items"]}


def _assemble(out: Path, items: dict[str, dict], prefix: str) -> np.ndarray:
    """The padded copy ``prefix`` rebuilt from its patches (stride = patch size)."""
    whole = np.full(PADDED, 255, np.uint8)
    for y in range(0, PADDED[0], PATCH):
        for x in range(0, PADDED[1], PATCH):
            whole[y : y + PATCH, x : x + PATCH] = read_mask(out / items[f"{prefix}_{y}_{x}"]["mask"])
    return whole


@pytest.fixture(scope="module")
def potsdam(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("potsdam_paper")
    release = gen.make_potsdam(None, base / "release", SIZE, tiles=spec_tiles(SPEC_POTSDAM)["train"])
    clean = base / "clean"
    prepare("potsdam", release, clean, splits=["train"], patch_size=PATCH)
    paper = base / "paper"
    args = ["prepare", "potsdam", "--source", str(release), "--output", str(paper), "--splits", "train"]
    assert cli_main([*args, "--patch-size", str(PATCH), "--protocol", "paper", "--no-progress"]) == 0
    return release, clean, paper


def test_paper_padding_is_impervious_and_flips_come_before_padding(potsdam) -> None:
    release, clean, paper = potsdam
    label_file = release / "Potsdam" / "5_Labels_all" / "top_potsdam_2_11_label.tif"
    full = _index_labels(label_file)
    height, width = full.shape
    pad = ((0, PADDED[0] - height), (0, PADDED[1] - width))
    paper_items, clean_items = _items(paper), _items(clean)
    for copy, flip in (("", lambda a: a), ("_hflip", np.fliplr), ("_vflip", np.flipud)):
        prefix = f"top_potsdam_2_11{copy}"
        # the original: flip the tile as it is, then pad at the bottom and right with class 0
        np.testing.assert_array_equal(_assemble(paper, paper_items, prefix), np.pad(flip(full), pad))
        # clean: pad with ignore, then flip the padded tile
        expected_clean = flip(np.pad(full, pad, constant_values=IGNORE))
        np.testing.assert_array_equal(_assemble(clean, clean_items, prefix), expected_clean)
    manifest = _manifest(paper)
    assert manifest["protocol"] == "paper" and _manifest(clean)["protocol"] == "clean"
    assert "padding labelled impervious_surfaces (class 0)" in manifest["protocol_notes"]
    assert manifest["splits"]["train"]["ignored"] == 0 < _manifest(clean)["splits"]["train"]["ignored"]
    assert not any("zoom" in name for name in paper_items)  # Potsdam's tool has no car zoom


def test_paper_flipped_copies_are_georeferenced_as_flips_of_the_unpadded_tile(potsdam) -> None:
    release, clean, paper = potsdam
    with rasterio.open(release / "Potsdam" / "2_Ortho_RGB" / "top_potsdam_2_11_RGB.tif") as tile:
        transform = tile.transform
    height, width = SIZE
    for out, extent in ((paper, (height, width)), (clean, PADDED)):
        with rasterio.open(out / _items(out)["top_potsdam_2_11_hflip_0_0"]["image"]) as patch:
            # its first column shows the tile's last column (of the padded tile, for clean)
            np.testing.assert_allclose(patch.transform @ (0.5, 0.5), transform @ (extent[1] - 0.5, 0.5))
        with rasterio.open(out / _items(out)["top_potsdam_2_11_vflip_0_0"]["image"]) as patch:
            np.testing.assert_allclose(patch.transform @ (0.5, 0.5), transform @ (0.5, extent[0] - 0.5))


@pytest.fixture(scope="module")
def vaihingen(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("vaihingen_paper")
    release = gen.make_vaihingen(None, base / "release", SIZE, tiles=spec_tiles(SPEC_VAIHINGEN)["train"])
    # tile 1: cars fill the top-left patch, so its zoom must fire whatever crop is drawn
    label = release / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE" / "top_mosaic_09cm_area1.tif"
    with rasterio.open(label) as src:
        profile, colours = src.profile, src.read()
    colours[:, :PATCH, :PATCH] = np.array((255, 255, 0), np.uint8)[:, None, None]
    with rasterio.open(label, "w", **profile) as dst:
        dst.write(colours)
    out = base / "paper"
    prepare("vaihingen", release, out, splits=["train"], patch_size=PATCH, protocol="paper")
    return release, out


def test_car_zoom_replaces_a_patch_by_four_variants(vaihingen) -> None:
    release, out = vaihingen
    items = _items(out)
    name = "top_mosaic_09cm_area1_0_0"
    assert name not in items  # replaced, as the original tool does
    group = {n: i for n, i in items.items() if n.startswith(f"{name}_zoom")}
    assert len(group) == 4
    crop_item = group[f"{name}_zoom"]
    y0, x0, side = crop_item["zoom"]["window"]
    low, high = ZoomStep(CAR).side_range(PATCH)
    assert (
        (low, high) == (24, 32) and low <= side <= high and 0 <= min(y0, x0) and max(y0, x0) + side <= PATCH
    )
    crop = read_mask(out / crop_item["mask"])
    assert np.all(crop == CAR)
    masks = {i["zoom"]["variant"]: read_mask(out / i["mask"]) for i in group.values()}
    turns = next(i["zoom"]["quarter_turns"] for i in group.values() if "rot" in i["zoom"]["variant"])
    assert set(masks) == {"zoom", "zoom_vflip", "zoom_hflip", f"zoom_rot{90 * turns}"}
    images = {i["zoom"]["variant"]: rasterio.open(out / i["image"]) for i in group.values()}
    try:
        crop_image = images["zoom"].read()
        np.testing.assert_array_equal(images["zoom_vflip"].read(), crop_image[:, ::-1])
        np.testing.assert_array_equal(images["zoom_hflip"].read(), crop_image[:, :, ::-1])
        np.testing.assert_array_equal(
            images[f"zoom_rot{90 * turns}"].read(), np.rot90(crop_image, turns, (1, 2))
        )
        # every variant is a correct map of the ground: a pixel's centre lands on the same crop pixel
        inverse = ~images["zoom"].transform
        rows, cols = np.mgrid[0:PATCH:7, 0:PATCH:5]
        for image in images.values():
            values = image.read()
            world = image.transform @ (cols + 0.5, rows + 0.5)
            c, r = inverse @ world
            np.testing.assert_array_equal(
                values[:, rows, cols], crop_image[:, np.floor(r).astype(int), np.floor(c).astype(int)]
            )
        # the crop lies where its window says in the source tile
        with rasterio.open(
            release / "ISPRS_semantic_labeling_Vaihingen" / "top" / "top_mosaic_09cm_area1.tif"
        ) as tile:
            np.testing.assert_allclose(images["zoom"].transform @ (0, 0), tile.transform @ (x0, y0))
            np.testing.assert_allclose(
                images["zoom"].transform @ (PATCH, PATCH), tile.transform @ (x0 + side, y0 + side)
            )
    finally:
        for image in images.values():
            image.close()


@pytest.mark.slow
def test_car_zoom_keeps_patches_with_few_cars_and_is_seeded(vaihingen, tmp_path) -> None:
    release, out = vaihingen
    items = _items(out)
    for name, item in items.items():
        if "zoom" in item:
            continue
        assert item["name"] == name  # a kept patch keeps its plain name
    crops = [i for i in items.values() if i.get("zoom", {}).get("variant") == "zoom"]
    for crop in crops:  # the zoom fires only above a 10 % car share of the crop
        assert np.count_nonzero(read_mask(out / crop["mask"]) == CAR) > 0.1 * PATCH * PATCH
    car_free = [n for n, i in items.items() if "zoom" not in i and i["pixels"][CAR] == 0]
    assert car_free, "the fixture should have patches without cars"
    again = tmp_path / "again"
    prepare("vaihingen", release, again, splits=["train"], patch_size=PATCH, protocol="paper")
    assert {n: i["image_sha256"] for n, i in _items(again).items()} == {
        n: i["image_sha256"] for n, i in items.items()
    }


def test_car_zoom_matches_the_original_crop_range_at_1024() -> None:
    # albumentations' RandomSizedCrop(min_max_height=(int(3 * h // 8), int(h // 2))) of the original tool
    assert VAIHINGEN.paper.zoom is not None and VAIHINGEN.paper.zoom.side_range(1024) == (384, 512)
    assert VAIHINGEN.paper.zoom.class_index == VAIHINGEN.spec.class_names.index("car")
    with pytest.raises(ConfigError, match="protocol must be one of clean, paper"):
        prepare("vaihingen", "nowhere", "nowhere", protocol="published")


@pytest.mark.slow
def test_evaluate_reports_the_protocol_and_the_passes_of_paper_tta(potsdam, tmp_path, capsys) -> None:
    import torch

    from bicorseg.checkpoint import save_checkpoint
    from bicorseg.data import get_spec
    from bicorseg.models import BiCoRSeg
    from tests.helpers.models import tiny_config

    _, clean, paper = potsdam
    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        BiCoRSeg(tiny_config(num_classes=6), dataset=get_spec("potsdam")), tmp_path / "m.ckpt"
    )
    report = tmp_path / "metrics.json"
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "potsdam",
        "--split",
        "train",
        "--limit",
        "3",
    ]
    assert cli_main([*args, "--root", str(paper), "--tta", "paper", "--output", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "data preparation protocol: paper (padding labelled impervious_surfaces (class 0)" in printed
    assert (
        "test-time augmentation: paper (potsdam): horizontal flip x vertical flip = 4 passes, logits averaged"
        in printed
    )
    convention = json.loads(report.read_text())["convention"]
    assert convention["tta"] == "paper (potsdam)" and convention["protocol"].startswith("paper")
    assert convention["tta_passes"] == [
        {"hflip": h, "vflip": v, "rot90": 0, "scale": 1.0} for h in (False, True) for v in (False, True)
    ]
    assert (
        cli_main(
            [*args, "--root", str(clean), "--tta", "lr", "--tta-scales", "1,1.5", "--tta-merge", "logits"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "data preparation protocol: clean" in printed
    assert (
        "test-time augmentation: lr: horizontal flip x vertical flip x scales {1, 1.5} (bicubic) = 8 passes"
        in printed
    )
    assert cli_main([*args, "--root", str(clean), "--tta", "paper", "--tta-scales", "1,2"]) == 2
    assert "--tta paper fixes its passes and merge" in capsys.readouterr().err
