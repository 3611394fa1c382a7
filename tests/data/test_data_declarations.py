"""The dataset declarations: splits tile for tile as the published protocol gives them, protocol settings, specs."""

from __future__ import annotations

import pytest

import bicorseg.data as data
from bicorseg.data.datasets import LOVEDA, POTSDAM, VAIHINGEN
from bicorseg.errors import ConfigError
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT
from tests.helpers.data import POTSDAM_SPLITS, VAIHINGEN_SPLITS, split_tiles


@pytest.mark.parametrize(("release", "table"), [(VAIHINGEN, VAIHINGEN_SPLITS), (POTSDAM, POTSDAM_SPLITS)])
def test_isprs_splits_match_the_published_protocol_tile_for_tile(release, table):
    expected = split_tiles(table)
    assert [rule.name for rule in release.splits] == ["train", "val", "test"]
    for split, tiles in expected.items():
        assert list(release.split(split).tiles) == tiles
        assert list(release.spec.splits[split]) == tiles
    every = [t for tiles in expected.values() for t in tiles]
    assert len(every) == len(set(every))


def test_isprs_cutting_protocol():
    train, val, test = (VAIHINGEN.split(s) for s in ("train", "val", "test"))
    assert (train.patch_size, train.stride, train.pad, train.flips, train.labels) == (
        1024, 512, True, ("hflip", "vflip"), "full"
    )  # fmt: skip
    for rule in (val, test):
        assert (rule.patch_size, rule.stride, rule.flips, rule.labels) == (1024, 1024, (), "eroded")
    train, test = POTSDAM.split("train"), POTSDAM.split("test")
    assert (train.patch_size, train.stride, train.flips, train.labels) == (
        1024,
        1024,
        ("hflip", "vflip"),
        "full",
    )
    assert (test.patch_size, test.stride, test.labels) == (1024, 1024, "eroded")
    # Scaling the patch size keeps the stride ratio (quick experiments).
    assert VAIHINGEN.split("train").scaled(256).stride == 128


def test_specs_hold_the_published_conventions():
    v, p, lo = data.get_spec("vaihingen"), data.get_spec("potsdam"), data.get_spec("loveda")
    assert v.class_names == p.class_names == (
        "impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"
    )  # fmt: skip
    assert (v.ignore_index, v.eval_classes, v.label_variant) == (6, (0, 1, 2, 3, 4), "eroded")
    assert v.bands == ("nir", "red", "green") and v.mean == IMAGENET_MEAN_8BIT and v.std == IMAGENET_STD_8BIT
    assert p.bands == ("red", "green", "blue") and p.ignore_index == 6
    assert v.palette == ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
    assert lo.num_classes == 7 and lo.ignore_index == 7 and lo.eval_classes == tuple(range(7))
    assert lo.palette[4] == (159, 129, 183) and lo.palette[6] == (255, 195, 128)
    assert data.get_spec("potsdam", "IRRG").bands == ("nir", "red", "green")


def test_label_tables():
    isprs = VAIHINGEN.label_table
    assert isprs.kind == "colour" and isprs.ignore_index == 6
    assert dict(isprs.codes)[(0, 0, 0)] == 6 and dict(isprs.codes)[(255, 0, 0)] == 5
    loveda = LOVEDA.label_table
    assert dict(loveda.codes) == {0: 7, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6}


def test_registry_and_unknown_names():
    assert data.get_release("Vaihingen") is VAIHINGEN
    with pytest.raises(ConfigError, match="unknown dataset 'isaid'"):
        data.get_spec("isaid")
    with pytest.raises(ConfigError, match="no band variant 'RGBIR'"):
        data.get_spec("potsdam", "RGBIR")


def test_path_patterns_find_release_files_anywhere():
    image = VAIHINGEN.pattern("top/top_mosaic_09cm_area{tile}.tif")
    assert image.search("ISPRS_semantic_labeling_Vaihingen/top/top_mosaic_09cm_area11.tif")["tile"] == "11"
    assert image.search("gts_for_participants/top_mosaic_09cm_area11.tif") is None
    eroded = VAIHINGEN.pattern("top_mosaic_09cm_area{tile}_noBoundary.tif")
    assert eroded.search("top_mosaic_09cm_area3_noBoundary.tif")["tile"] == "3"
    assert (
        VAIHINGEN.pattern("top_mosaic_09cm_area{tile}.tif").search("top_mosaic_09cm_area3_noBoundary.tif")
        is None
    )
    label = POTSDAM.pattern("top_potsdam_{tile}_label.tif")
    assert label.search("5_Labels_all/top_potsdam_6_7_label.tif")["tile"] == "6_7"
    found = LOVEDA.pattern("{part}/{domain}/images_png/{tile}.png").search("x/Train/Rural/images_png/12.png")
    assert found.groupdict() == {"part": "Train", "domain": "Rural", "tile": "12"}
