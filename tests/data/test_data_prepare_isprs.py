"""``prepare`` end to end on generated ISPRS release fixtures (official names, layout, GeoTIFF, colours)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image

from bicorseg.atomic import sha256_file
from bicorseg.cli.main import main as cli_main
from bicorseg.data import AugmentConfig, TrainTransform, build_dataset, get_spec
from bicorseg.data.datasets import ISPRS_LABELS
from bicorseg.data.io import read_image, read_mask
from bicorseg.data.release import PrepareResult, prepare
from bicorseg.data.release import run as release_run
from bicorseg.data.release.journal import WORK_DIR
from bicorseg.errors import ConfigError, InputError
from tests.helpers.data import POTSDAM_SPLITS, VAIHINGEN_SPLITS, expected_patches, load_generator, split_tiles

gen = load_generator()
SMALL = (300, 360)  # fixture tile size of the quick tests, cut into PATCH px patches
PATCH = 256
PADDED = 512  # SMALL padded to a multiple of PATCH
TINY = (64, 80)


@pytest.fixture(scope="module")
def vaihingen_release(tmp_path_factory) -> Path:
    return gen.make_vaihingen(None, tmp_path_factory.mktemp("vaihingen_release"), SMALL)


@pytest.fixture(scope="module")
def vaihingen_prepared(vaihingen_release, tmp_path_factory) -> tuple[Path, PrepareResult]:
    out = tmp_path_factory.mktemp("vaihingen_prepared")
    return out, prepare("vaihingen", vaihingen_release, out, patch_size=PATCH)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _tiny_vaihingen(tmp_path: Path, **kwargs) -> Path:
    return gen.make_vaihingen(None, tmp_path / "release", TINY, **kwargs)


# ------------------------------------------------------------------------------------------- Vaihingen


def test_vaihingen_splits_patches_and_manifest(vaihingen_prepared):
    out, result = vaihingen_prepared
    manifest = _manifest(out)
    assert manifest["dataset"] == "vaihingen" and manifest["variant"] == "IRRG"
    assert manifest["spec"]["ignore_index"] == 6 and manifest["spec"]["bands"] == ["nir", "red", "green"]
    expected_tiles = split_tiles(VAIHINGEN_SPLITS)
    for split, tiles in expected_tiles.items():
        info = manifest["splits"][split]
        assert sorted(t["tile"] for t in info["tiles"].values()) == sorted(tiles)  # tile for tile
        assert {item["tile"] for item in info["items"]} == set(tiles)
    train, val, test = (manifest["splits"][s] for s in ("train", "val", "test"))
    assert train["rule"] == {"tiles": expected_tiles["train"], "where": {}, "labels": "full", "patch_size": PATCH,
                             "stride": PATCH // 2, "pad": True, "flips": ["hflip", "vflip"]}  # fmt: skip
    assert train["count"] == 15 * expected_patches(*SMALL, PATCH, PATCH // 2, copies=3) == len(train["items"])
    assert val["count"] == expected_patches(*SMALL, PATCH, PATCH, copies=1)
    assert test["count"] == 17 * expected_patches(*SMALL, PATCH, PATCH, copies=1)
    assert (train["label_variant"], val["label_variant"], test["label_variant"]) == (
        "full",
        "eroded",
        "eroded",
    )
    assert result.splits["train"].patches == train["count"] and result.splits["train"].reused == 0
    # Every listed file exists with its checksum; nothing else is in the split folders.
    listed = set()
    for info in manifest["splits"].values():
        for item in info["items"][:: max(1, len(info["items"]) // 40)]:
            assert sha256_file(out / item["image"]) == item["image_sha256"]
            assert sha256_file(out / item["mask"]) == item["mask_sha256"]
        listed |= {item["image"] for item in info["items"]} | {item["mask"] for item in info["items"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == listed
    summary = result.summary()
    assert "train: 15 tiles" in summary and "val: 1 tile" in summary and "test: 17 tiles" in summary


def test_vaihingen_masks_follow_the_labels_pixel_for_pixel(vaihingen_prepared, vaihingen_release):
    out, _ = vaihingen_prepared
    manifest = _manifest(out)
    height, width = SMALL
    padded = (PADDED, PADDED)
    label_dir = vaihingen_release / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
    eroded = ISPRS_LABELS.encode(
        read_mask(label_dir / "top_mosaic_09cm_area2_noBoundary.tif", mode="colour"), "x"
    )[0]
    image = read_image(vaihingen_release / "ISPRS_semantic_labeling_Vaihingen/top/top_mosaic_09cm_area2.tif")
    full_eroded = np.full(padded, 6, np.uint8)
    full_eroded[:height, :width] = eroded
    full_image = np.zeros((3, *padded), np.uint8)
    full_image[:, :height, :width] = image
    items = [i for i in manifest["splits"]["test"]["items"] if i["tile"] == "2"]
    assert len(items) == 4
    for item in items:
        y, x = item["window"]
        np.testing.assert_array_equal(
            read_mask(out / item["mask"]), full_eroded[y : y + PATCH, x : x + PATCH]
        )
        with Image.open(out / item["mask"]) as picture:  # a paletted PNG in the class colours
            colours = np.asarray(picture.getpalette()).reshape(-1, 3)[:6]
            assert picture.mode == "P" and [tuple(c) for c in colours] == list(get_spec("vaihingen").palette)
        np.testing.assert_array_equal(
            read_image(out / item["image"]), full_image[:, y : y + PATCH, x : x + PATCH]
        )
        counts = np.bincount(full_eroded[y : y + PATCH, x : x + PATCH].ravel(), minlength=7)
        assert item["pixels"] == counts[:6].tolist() and item["ignored"] == counts[6]
    # Training masks come from the full labels: the only ignored pixels are the padding, which
    # the flipped copies carry to their flipped place.
    padding = np.ones(padded, bool)
    padding[:height, :width] = False
    views = {"original": padding, "hflip": padding[:, ::-1], "vflip": padding[::-1]}
    for item in (i for i in manifest["splits"]["train"]["items"] if i["tile"] == "1"):
        y, x = item["window"]
        mask = read_mask(out / item["mask"])
        np.testing.assert_array_equal(mask == 6, views[item["copy"]][y : y + PATCH, x : x + PATCH])
    assert {i["copy"] for i in manifest["splits"]["train"]["items"]} == {"original", "hflip", "vflip"}


def test_vaihingen_patches_keep_georeferencing(vaihingen_prepared, vaihingen_release):
    out, _ = vaihingen_prepared
    with rasterio.open(
        vaihingen_release / "ISPRS_semantic_labeling_Vaihingen/top/top_mosaic_09cm_area1.tif"
    ) as src:
        source = src.transform
    padded_w, padded_h = PADDED, PADDED
    for item in (i for i in _manifest(out)["splits"]["train"]["items"] if i["tile"] == "1"):
        y, x = item["window"]
        with rasterio.open(out / item["image"]) as patch:
            assert patch.crs.to_epsg() == 32632
            # The centre of patch pixel (row 5, col 7) lies on the same ground as its source pixel.
            col, row = 7, 5
            if item["copy"] == "original":
                src_col, src_row = x + col, y + row
            elif item["copy"] == "hflip":
                src_col, src_row = padded_w - 1 - (x + col), y + row
            else:
                src_col, src_row = x + col, padded_h - 1 - (y + row)
            expected = source @ (src_col + 0.5, src_row + 0.5)
            np.testing.assert_allclose(patch.transform @ (col + 0.5, row + 0.5), expected)


def test_rerun_is_idempotent_and_repairs_damage(vaihingen_release, tmp_path):
    out = tmp_path / "out"
    first = prepare("vaihingen", vaihingen_release, out, patch_size=256, splits=["val", "test"])
    manifest = (out / "manifest.json").read_text()
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare("vaihingen", vaihingen_release, out, patch_size=256, splits=["val", "test"])
    assert again.up_to_date and not first.up_to_date
    assert (out / "manifest.json").read_text() == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"} == {
        p: t for p, t in times.items() if p.name != "manifest.json"
    }
    # A deleted patch and a corrupted mask: only their tiles are redone, to the same bytes.
    items = json.loads(manifest)["splits"]["test"]["items"]
    (out / items[0]["image"]).unlink()
    (out / items[-1]["mask"]).write_bytes(b"garbage")
    repaired = prepare("vaihingen", vaihingen_release, out, patch_size=256, splits=["val", "test"])
    assert repaired.splits["test"].reused == 15 and repaired.splits["val"].reused == 1
    assert sha256_file(out / items[0]["image"]) == items[0]["image_sha256"]
    assert sha256_file(out / items[-1]["mask"]) == items[-1]["mask_sha256"]
    assert (out / "manifest.json").read_text() == manifest
    # Another patch size: new patches, and the old ones are removed.
    other = prepare("vaihingen", vaihingen_release, out, patch_size=200, splits=["val", "test"])
    assert other.removed_stale > 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert files == {i["mask"] for s in _manifest(out)["splits"].values() for i in s["items"]}


def test_interrupted_run_leaves_no_partial_output_and_resumes(tmp_path, monkeypatch):
    release = _tiny_vaihingen(tmp_path)
    out = tmp_path / "out"
    calls = []
    real = release_run.process_item

    def interrupted(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(release_run, "process_item", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("vaihingen", release, out, patch_size=64)
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    monkeypatch.setattr(release_run, "process_item", real)
    result = prepare("vaihingen", release, out, patch_size=64)
    assert result.splits["train"].reused == 3
    assert not (out / WORK_DIR).exists()


def test_missing_tiles_are_listed(tmp_path):
    tiles = [t for t in gen.VAIHINGEN_TILES if t not in ("5", "30", "38")]
    release = _tiny_vaihingen(tmp_path, tiles=tiles)
    (
        release
        / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE/top_mosaic_09cm_area4_noBoundary.tif"
    ).unlink()
    with pytest.raises(InputError) as error:
        prepare("vaihingen", release, tmp_path / "out", patch_size=64)
    text = str(error.value)
    assert "train: no image for tile(s) 5 " in text and "val: no image for tile(s) 30 " in text
    assert "test: no image for tile(s) 38 " in text and "test: no eroded label for tile(s) 4 " in text
    assert "\n" not in text and not (tmp_path / "out" / "manifest.json").exists()


def test_size_mismatch_and_unknown_colours(tmp_path):
    release = _tiny_vaihingen(tmp_path)
    label = (
        release
        / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE/top_mosaic_09cm_area2_noBoundary.tif"
    )
    gen.write_label(label, np.zeros((3, 60, 80), np.uint8), 32632, (0, 0), 0.09)
    with pytest.raises(
        InputError, match=r"area2_noBoundary\.tif: label is 80x60 px but its image .*area2\.tif is 80x64 px"
    ):
        prepare("vaihingen", release, tmp_path / "out", patch_size=64, splits=["test"])
    odd = np.zeros((3, 64, 80), np.uint8)
    odd[:, 10, 20] = (250, 250, 250)  # almost white: a real pitfall of re-saved label files
    gen.write_label(label, odd, 32632, (0, 0), 0.09)
    with pytest.raises(
        InputError,
        match=r"area2_noBoundary\.tif: 1 pixels have colours not in the class table.*\(250, 250, 250\)",
    ):
        prepare("vaihingen", release, tmp_path / "out", patch_size=64, splits=["test"])
    result = prepare(
        "vaihingen", release, tmp_path / "out", patch_size=64, splits=["test"], unknown_colours="ignore"
    )
    assert result.splits["test"].unknown_ignored == 1
    assert "1 pixels of unknown colour/value were set to ignore" in result.summary()


@pytest.mark.slow
def test_vaihingen_official_zip_archives_give_the_same_patches(tmp_path):
    unpacked = _tiny_vaihingen(tmp_path)
    zipped = gen.make_vaihingen(None, tmp_path / "zips", TINY, archives=True)
    assert sorted(p.name for p in zipped.iterdir()) == [
        "ISPRS_semantic_labeling_Vaihingen.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
    ]
    a = prepare("vaihingen", unpacked, tmp_path / "a", patch_size=64)
    b = prepare("vaihingen", zipped, tmp_path / "b", patch_size=64)
    assert a.splits["train"].patches == b.splits["train"].patches == 15 * expected_patches(*TINY, 64, 32, 3)

    def digest(out: Path) -> list:
        items = (i for s in _manifest(out)["splits"].values() for i in s["items"])
        return sorted((i["name"], i["image_sha256"], i["mask_sha256"]) for i in items)

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_output_of_another_dataset_is_not_overwritten(tmp_path):
    release = _tiny_vaihingen(tmp_path)
    out = tmp_path / "out"
    prepare("vaihingen", release, out, patch_size=64, splits=["val"])
    potsdam = gen.make_potsdam(None, tmp_path / "potsdam", TINY)
    with pytest.raises(ConfigError, match=r"holds vaihingen .* `force`"):
        prepare("potsdam", potsdam, out, patch_size=64, splits=["val"])
    prepare("potsdam", potsdam, out, patch_size=64, splits=["val"], force=True)
    manifest = _manifest(out)
    assert manifest["dataset"] == "potsdam"
    assert not list(out.rglob("top_mosaic*"))


def test_cli_prepare(tmp_path, capsys):
    release = _tiny_vaihingen(tmp_path)
    args = ["prepare", "vaihingen", "--source", str(release), "--output", str(tmp_path / "out"),
            "--patch-size", "64", "--splits", "val,test", "--no-progress"]  # fmt: skip
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "vaihingen (IRRG) prepared in" in printed and "test: 17 tiles" in printed and "manifest:" in printed
    )
    assert cli_main(args) == 0
    assert "17 already done" in capsys.readouterr().out
    assert (
        cli_main(["prepare", "vaihingen", "--source", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    )
    assert "nope: source does not exist" in capsys.readouterr().err
    config = tmp_path / "prepare.yaml"
    config.write_text("patch_size: 48\nsplits: [val]\n")
    assert cli_main([*args[:6], "--config", str(config), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "patch_size: 48" in printed and "splits: [val]" in printed


# --------------------------------------------------------------------------------------------- Potsdam


def test_potsdam_nested_archives_irrg_and_excluded_tile(tmp_path):
    release = gen.make_potsdam(None, tmp_path / "release", TINY, archives=True, nested=True, irrg=True)
    assert [p.name for p in release.iterdir()] == ["Potsdam.zip"]
    out = tmp_path / "out"
    result = prepare("potsdam", release / "Potsdam.zip", out, patch_size=64, variant="IRRG")
    manifest = _manifest(out)
    for split, tiles in split_tiles(POTSDAM_SPLITS).items():
        assert sorted(t["tile"] for t in manifest["splits"][split]["tiles"].values()) == sorted(tiles)
    assert "7_10" not in json.dumps(manifest["splits"])
    assert manifest["variant"] == "IRRG" and manifest["spec"]["bands"] == ["nir", "red", "green"]
    assert result.splits["train"].patches == 22 * expected_patches(*TINY, 64, 64, 3)
    source = manifest["splits"]["train"]["tiles"]["top_potsdam_6_7"]["source"]["image"]
    assert source == "3_Ortho_IRRG/top_potsdam_6_7_IRRG.tif"  # the IRRG member of the inner zip
    assert not (out / WORK_DIR).exists()  # the unpacked inner archives are gone


# ---------------------------------------------------------------------------- the real protocol sizes


@pytest.mark.slow
def test_vaihingen_real_protocol_sizes(tmp_path):
    # Tile 1 needs padding (1100 x 1300 -> 2048 x 2048, 9 windows of 1024 at stride 512 per copy).
    sizes = lambda tile: (1100, 1300) if tile == "1" else (1024, 1024)  # noqa: E731
    release = gen.make_vaihingen(None, tmp_path / "release", sizes, archives=True)
    out = tmp_path / "out"
    result = prepare("vaihingen", release, out)
    manifest = _manifest(out)
    assert manifest["splits"]["train"]["count"] == 3 * 9 + 14 * 3
    assert manifest["splits"]["val"]["count"] == 1 and manifest["splits"]["test"]["count"] == 17
    assert {i["height"] for s in manifest["splits"].values() for i in s["items"]} == {1024}
    windows = sorted({tuple(i["window"]) for i in manifest["splits"]["train"]["items"] if i["tile"] == "1"})
    assert windows == [(y, x) for y in (0, 512, 1024) for x in (0, 512, 1024)]
    for split, tiles in split_tiles(VAIHINGEN_SPLITS).items():
        assert sorted({i["tile"] for i in manifest["splits"][split]["items"]}) == sorted(tiles)
    assert result.splits["test"].ignored > 0  # eroded boundaries
    assert os.path.getsize(out / manifest["splits"]["test"]["items"][0]["image"]) >= 3 * 1024 * 1024


@pytest.mark.slow
def test_potsdam_real_protocol_sizes(tmp_path):
    release = gen.make_potsdam(None, tmp_path / "release", (1024, 1024))
    out = tmp_path / "out"
    prepare("potsdam", release, out)
    manifest = _manifest(out)
    assert manifest["variant"] == "RGB"
    assert [manifest["splits"][s]["count"] for s in ("train", "val", "test")] == [22 * 3, 1, 14]
    for split, tiles in split_tiles(POTSDAM_SPLITS).items():
        assert sorted({i["tile"] for i in manifest["splits"][split]["items"]}) == sorted(tiles)
    with rasterio.open(out / manifest["splits"]["val"]["items"][0]["image"]) as patch:
        assert patch.crs.to_epsg() == 32633 and patch.count == 3 and patch.width == 1024
        assert isinstance(patch.transform, Affine)
    shutil.rmtree(release)


def test_prepared_dataset_over_isprs_patches(vaihingen_prepared, tmp_path):
    out, _ = vaihingen_prepared
    train = build_dataset("vaihingen", out, "train", transform=TrainTransform(AugmentConfig(96, seed=0)))
    assert len(train) == 15 * expected_patches(*SMALL, PATCH, PATCH // 2, copies=3)
    sample = train[0]
    assert sample["image"].shape == (3, 96, 96) and sample["mask"].shape == (96, 96)
    assert sample["mask"].max() <= 6 and sample["image"].dtype == torch.float32
    assert train.spec == get_spec("vaihingen")
    both = build_dataset("vaihingen", out, "val+test")
    assert len(both) == 18 * expected_patches(*SMALL, PATCH, PATCH, copies=1)
    with pytest.raises(ConfigError, match="no split 'extra' prepared"):
        build_dataset("vaihingen", out, "extra")
    with pytest.raises(InputError, match="no manifest here; run `bicorseg prepare`"):
        build_dataset("potsdam", tmp_path, "train")
    with pytest.raises(ConfigError, match="does not fit"):
        build_dataset("vaihingen", out, "val", spec=get_spec("loveda"))
    with pytest.raises(ConfigError, match="unknown dataset kind 'isaid'"):
        build_dataset("isaid", out, "val")


def test_a_malformed_manifest_is_one_line_naming_the_file_and_the_key(tmp_path):
    release = _tiny_vaihingen(tmp_path)
    out = tmp_path / "out"
    prepare("vaihingen", release, out, patch_size=64, splits=["val"])
    complete, broken = _manifest(out), _manifest(out)
    broken["splits"]["val"]["items"][0]["height"] = "64"
    (out / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match=r"manifest.json: malformed manifest: split 'val': 'height' is str"):
        build_dataset("vaihingen", out, "val")
    del broken["splits"]["val"]["items"][0]["image"]
    (out / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match=r"malformed manifest: split 'val': no 'image'"):
        prepare("vaihingen", release, out, patch_size=64, splits=["val"])
    # version 1 is the first format: a key it writes is required, even one with an obvious value
    for key, message in [
        ("protocol", "malformed manifest: no 'protocol'"),
        ("version", "manifest version None"),
    ]:
        (out / "manifest.json").write_text(json.dumps({k: v for k, v in complete.items() if k != key}))
        with pytest.raises(InputError, match=rf"manifest\.json: {message}"):
            build_dataset("vaihingen", out, "val")
