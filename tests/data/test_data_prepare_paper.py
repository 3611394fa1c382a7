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
from bicorseg.precision import resolve_precision
from tests.helpers.data import POTSDAM_SPLITS, VAIHINGEN_SPLITS, load_generator, split_tiles

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


# --- the original split script (tools/potsdam_patch_split.py), written here by the rules it relies on --


def pad_if_needed_bottom_right(array: np.ndarray, min_height: int, min_width: int, value: int) -> np.ndarray:
    """albumentations' ``PadIfNeeded(min_height, min_width, position='bottom_right',
    border_mode=cv2.BORDER_CONSTANT, value=value)`` on an ``H x W (x C)`` array, by its documented rule.

    albumentations documents ``position`` as the "position where the image is to be placed after
    padding" (PadIfNeeded, albumentations >= 1.0.1): ``bottom_right`` puts the image in the
    bottom-right corner, so every padded row is above it and every padded column to its left. The
    constant border is OpenCV's ``copyMakeBorder``, which reads a scalar ``value`` as
    ``Scalar(value, 0, 0, 0)``: on a colour array only the first channel gets ``value``.
    """
    rows, cols = min_height - array.shape[0], min_width - array.shape[1]
    out = np.zeros((min_height, min_width, *array.shape[2:]), array.dtype)
    if array.ndim == 2:
        out[...] = value
    else:
        out[..., 0] = value  # Scalar(value, 0, 0, 0)
    out[rows:, cols:] = array
    return out


# The original's colour-to-index table, in its BGR order (after cv2.COLOR_RGB2BGR); a pixel of any
# other colour keeps the 0 it starts with.
ORIGINAL_BGR_CLASSES = {
    (255, 255, 255): 0, (255, 0, 0): 1, (255, 255, 0): 2, (0, 255, 0): 3, (0, 255, 255): 4, (0, 0, 255): 5,
    (0, 0, 0): 6,
}  # fmt: skip


def original_patches(
    image: np.ndarray, colours: np.ndarray, patch: int, train: bool
) -> dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]]:
    """(copy, y, x) -> image (``H x W x 3``) and class patch, as the original split script cuts a
    tile (stride = patch): copies flipped first (train), then padded; the padded colour label
    swapped to BGR and converted by its table; only whole patches kept."""
    copies = {"": (image, colours)}
    if train:
        copies |= {"_hflip": (image[:, ::-1], colours[:, ::-1]), "_vflip": (image[::-1], colours[::-1])}
    patches = {}
    for copy, (img, label) in copies.items():
        height = -(-img.shape[0] // patch) * patch
        width = -(-img.shape[1] // patch) * patch
        img = pad_if_needed_bottom_right(img, height, width, 0)
        bgr = pad_if_needed_bottom_right(label, height, width, 6)[..., ::-1]
        classes = np.zeros(bgr.shape[:2], np.uint8)
        for colour, index in ORIGINAL_BGR_CLASSES.items():
            classes[np.all(bgr == colour, axis=-1)] = index
        # (its images are swapped to BGR too, and cv2.imwrite swaps them back: the file holds RGB)
        for y in range(0, height, patch):
            for x in range(0, width, patch):
                patches[(copy, y, x)] = (
                    img[y : y + patch, x : x + patch],
                    classes[y : y + patch, x : x + patch],
                )
    return patches


def test_the_albumentations_rule_on_a_literal_tile() -> None:
    tile = np.arange(1, 7, dtype=np.uint8).reshape(2, 3)
    expected = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3], [0, 4, 5, 6]]  # image bottom-right
    np.testing.assert_array_equal(pad_if_needed_bottom_right(tile, 4, 4, 0), expected)
    white = np.full((1, 1, 3), 255, np.uint8)
    padded = pad_if_needed_bottom_right(white, 2, 2, 6)
    assert padded[0, 0].tolist() == [6, 0, 0] and padded[1, 1].tolist() == [255, 255, 255]
    assert ORIGINAL_BGR_CLASSES.get(tuple(padded[0, 0, ::-1].tolist()), 0) == 0  # (0, 0, 6): class 0


@pytest.fixture(scope="module")
def potsdam(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("potsdam_paper")
    tiles = split_tiles(POTSDAM_SPLITS)
    release = gen.make_potsdam(None, base / "release", SIZE, tiles=tiles["train"] + tiles["test"])
    clean = base / "clean"
    prepare("potsdam", release, clean, splits=["train"], patch_size=PATCH)
    paper = base / "paper"
    args = ["prepare", "potsdam", "--source", str(release), "--output", str(paper), "--splits", "train,test"]
    assert cli_main([*args, "--patch-size", str(PATCH), "--protocol", "paper", "--no-progress"]) == 0
    return release, clean, paper


@pytest.mark.parametrize(("split", "tile", "labels"), [("train", "2_11", "5_Labels_all/top_potsdam_2_11_label"),
                         ("test", "2_13", "5_Labels_all_noBoundary/top_potsdam_2_13_label_noBoundary")])  # fmt: skip
def test_paper_patches_are_the_original_split_scripts(potsdam, split, tile, labels) -> None:
    release, _, paper = potsdam
    with rasterio.open(release / "Potsdam" / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif") as source:
        image = source.read().transpose(1, 2, 0)
    colours = read_mask(release / "Potsdam" / f"{labels}.tif", mode="colour").transpose(1, 2, 0)
    expected = original_patches(image, colours, PATCH, train=split == "train")
    items = {n: i for n, i in _items(paper, split).items() if n.startswith(f"top_potsdam_{tile}_")}
    assert len(items) == len(expected) == (3 if split == "train" else 1) * 4
    for (copy, y, x), (want_image, want_classes) in expected.items():
        item = items[f"top_potsdam_{tile}{copy}_{y}_{x}"]
        with rasterio.open(paper / item["image"]) as patch:
            np.testing.assert_array_equal(patch.read().transpose(1, 2, 0), want_image)
        np.testing.assert_array_equal(read_mask(paper / item["mask"]), want_classes)
    # the padding really is there: 28 rows above the tile, 8 columns to its left, class 0
    corner = read_mask(paper / items[f"top_potsdam_{tile}_0_0"]["mask"])
    assert (corner[:28] == 0).all() and (corner[:, :8] == 0).all()


def test_paper_padding_is_impervious_and_flips_come_before_padding(potsdam) -> None:
    release, clean, paper = potsdam
    label_file = release / "Potsdam" / "5_Labels_all" / "top_potsdam_2_11_label.tif"
    full = _index_labels(label_file)
    height, width = full.shape
    paper_items, clean_items = _items(paper), _items(clean)
    for copy, flip in (("", lambda a: a), ("_hflip", np.fliplr), ("_vflip", np.flipud)):
        prefix = f"top_potsdam_2_11{copy}"
        # the original: flip the tile as it is, then pad at the top and left with class 0
        top_left = ((PADDED[0] - height, 0), (PADDED[1] - width, 0))
        np.testing.assert_array_equal(_assemble(paper, paper_items, prefix), np.pad(flip(full), top_left))
        # clean: pad at the bottom and right with ignore, then flip the padded tile
        bottom_right = ((0, PADDED[0] - height), (0, PADDED[1] - width))
        expected_clean = flip(np.pad(full, bottom_right, constant_values=IGNORE))
        np.testing.assert_array_equal(_assemble(clean, clean_items, prefix), expected_clean)
    manifest = _manifest(paper)
    assert manifest["protocol"] == "paper" and _manifest(clean)["protocol"] == "clean"
    notes = manifest["protocol_notes"]
    assert (
        "padding labelled impervious_surfaces (class 0)" in notes and "padding at the top and left" in notes
    )
    assert manifest["splits"]["train"]["rule"]["pad_side"] == "top_left"
    assert "pad_side" not in _manifest(clean)["splits"]["train"]["rule"]
    assert manifest["splits"]["train"]["ignored"] == 0 < _manifest(clean)["splits"]["train"]["ignored"]
    assert not any("zoom" in name for name in paper_items)  # Potsdam's tool has no car zoom


def test_every_paper_and_clean_patch_is_a_correct_map_of_the_ground(potsdam) -> None:
    release, clean, paper = potsdam
    for out, split, tile in ((paper, "train", "2_11"), (paper, "test", "2_13"), (clean, "train", "2_11")):
        with rasterio.open(release / "Potsdam" / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif") as source:
            tile_image, inverse = source.read(), ~source.transform
        height, width = tile_image.shape[1:]
        seen = 0
        for name, item in _items(out, split).items():
            if not name.startswith(f"top_potsdam_{tile}_"):
                continue
            with rasterio.open(out / item["image"]) as patch:
                values, transform = patch.read(), patch.transform
            rows, cols = np.mgrid[0:PATCH, 0:PATCH]
            c, r = inverse @ (transform @ (cols + 0.5, rows + 0.5))
            c, r = np.floor(c).astype(int), np.floor(r).astype(int)
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            # a pixel inside the tile shows the tile's pixel there; one outside is padding (0)
            np.testing.assert_array_equal(values[:, inside], tile_image[:, r[inside], c[inside]])
            assert (values[:, ~inside] == 0).all()
            seen += int(inside.sum())
        assert seen == (3 if split == "train" else 1) * height * width  # every tile pixel, in every copy


@pytest.fixture(scope="module")
def vaihingen(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("vaihingen_paper")
    release = gen.make_vaihingen(None, base / "release", SIZE, tiles=split_tiles(VAIHINGEN_SPLITS)["train"])
    # tile 1: cars fill its last 64 rows and columns, which the bottom-right patch shows (the padding
    # is at the top and left), so its zoom must fire whatever crop is drawn
    label = release / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE" / "top_mosaic_09cm_area1.tif"
    with rasterio.open(label) as src:
        profile, colours = src.profile, src.read()
    colours[:, -PATCH:, -PATCH:] = np.array((255, 255, 0), np.uint8)[:, None, None]
    with rasterio.open(label, "w", **profile) as dst:
        dst.write(colours)
    out = base / "paper"
    prepare("vaihingen", release, out, splits=["train"], patch_size=PATCH, protocol="paper")
    return release, out


def test_car_zoom_replaces_a_patch_by_four_variants(vaihingen) -> None:
    release, out = vaihingen
    items = _items(out)
    corner = PADDED[0] - PATCH, PADDED[1] - PATCH  # the bottom-right patch: the tile's last rows
    name = f"top_mosaic_09cm_area1_{corner[0]}_{corner[1]}"
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
            top, left = SIZE[0] - PATCH, SIZE[1] - PATCH  # the patch's first tile row and column
            np.testing.assert_allclose(
                images["zoom"].transform @ (0, 0), tile.transform @ (left + x0, top + y0)
            )
            np.testing.assert_allclose(
                images["zoom"].transform @ (PATCH, PATCH),
                tile.transform @ (left + x0 + side, top + y0 + side),
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
    assert "precision: fp32" in printed  # the original evaluates in fp32, whatever auto would pick
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
    assert f"precision: {resolve_precision('auto', 'cpu')}" in printed  # no paper protocol: auto
    # paper data without paper TTA is evaluated in fp32 too; a precision asked for is kept
    assert cli_main([*args, "--root", str(paper), "--tta", "lr"]) == 0
    assert "precision: fp32" in capsys.readouterr().out
    assert cli_main([*args, "--root", str(paper), "--tta", "paper", "--precision", "bf16"]) == 0
    assert "precision: bf16" in capsys.readouterr().out
    assert (
        "test-time augmentation: lr: horizontal flip x vertical flip x scales {1, 1.5} (bicubic) = 8 passes"
        in printed
    )
    assert cli_main([*args, "--root", str(clean), "--tta", "paper", "--tta-scales", "1,2"]) == 2
    assert "--tta paper fixes its passes and merge" in capsys.readouterr().err


def test_a_rerun_cuts_again_what_an_earlier_version_padded_at_the_bottom_and_right(potsdam, tmp_path) -> None:
    release, _, _ = potsdam
    out = tmp_path / "paper"
    first = prepare("potsdam", release, out, splits=["test"], patch_size=PATCH, protocol="paper")
    assert first.splits["test"].reused == 0
    assert prepare("potsdam", release, out, splits=["test"], patch_size=PATCH, protocol="paper").up_to_date
    # a manifest written before the pad side was recorded: its paper tiles were padded bottom/right
    manifest = _manifest(out)
    del manifest["splits"]["test"]["rule"]["pad_side"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = prepare("potsdam", release, out, splits=["test"], patch_size=PATCH, protocol="paper")
    assert (
        again.splits["test"].reused == 0
        and _manifest(out)["splits"]["test"]["rule"]["pad_side"] == "top_left"
    )
