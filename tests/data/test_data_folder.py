"""Folder datasets: the real Dubai samples with their class table, and custom images of any kind."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg.data import ClassTable, FolderDataset, build_dataset
from bicorseg.data.base import SampleSelection
from bicorseg.data.io import write_tiff
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import IMAGENET_MEAN_8BIT, DatasetSpec
from tests.helpers.data import REPO_ROOT
from tests.helpers.shared import shared_path

DUBAI_TABLE = REPO_ROOT / "configs" / "classes" / "dubai.yaml"
# Pixels per colour over the 54 shared Dubai masks (class order of configs/classes/dubai.yaml).
DUBAI_COUNTS = [7141726, 34810689, 5480473, 5677554, 6311566, 271636]
DUBAI_BLACK = 5041


@pytest.mark.slow
@pytest.mark.shared
def test_dubai_loads_with_its_real_colours():
    root = shared_path("data", "dubai")
    dataset = FolderDataset(root, class_table=DUBAI_TABLE)
    spec = dataset.spec
    assert len(dataset) == 54
    assert spec.class_names == ("building", "land", "road", "vegetation", "water", "unlabeled")
    assert spec.ignore_index == 6 and spec.eval_classes == (0, 1, 2, 3, 4)
    assert spec.palette[0] == (60, 16, 152) and spec.mean == IMAGENET_MEAN_8BIT
    totals = np.zeros(7, np.int64)
    for i in range(len(dataset)):  # palette and RGB masks alike
        totals += np.bincount(dataset.load_mask(i).ravel(), minlength=7)
    assert totals[:6].tolist() == DUBAI_COUNTS and totals[6] == DUBAI_BLACK
    sample = dataset[0]
    assert sample["name"] == "Tile 1/images/image_part_001"
    assert sample["image"].shape == (3, 644, 797) and sample["mask"].shape == (644, 797)
    assert sample["mask"].dtype == torch.int64 and sample["image"].dtype == torch.float32


@pytest.mark.shared
def test_dubai_splits_by_subfolder_and_spec():
    root = shared_path("data", "dubai")
    splits = {"train": ["Tile 1", "Tile 2", "Tile 3", "Tile 4"], "val": ["Tile 6", "Tile 7"]}
    train = build_dataset("folder", root, "train", splits=splits, class_table=str(DUBAI_TABLE))
    val = build_dataset("folder", root, "val", spec=train.spec, splits=splits, class_table=DUBAI_TABLE)
    assert (len(train), len(val)) == (36, 18)
    with pytest.raises(ConfigError, match="no 'test' sub-folder"):
        build_dataset("folder", root, "test", class_table=DUBAI_TABLE)
    # Colour masks need a class table: read as index masks they are refused, naming the file.
    spec = DatasetSpec("x", ("a", "b"), ((0, 0, 0), (1, 1, 1)), 255, (0, 1))
    plain = FolderDataset(root / "Tile 1", spec=spec)
    with pytest.raises(InputError, match=r"image_part_001\.png: an index mask must have one band"):
        plain[0]


def test_sixteen_bit_multiband_geotiffs_with_index_masks(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir()
        for k in range(3):
            write_tiff(
                tmp_path / split / "images" / f"s{k}.tif", rng.integers(0, 4000, (5, 24, 32), dtype=np.uint16)
            )
            mask = rng.integers(0, 3, (24, 32), dtype=np.uint8)
            mask[0, :4] = 255
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"s{k}.png")
    table = {"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 1}, {"name": "c", "value": 2}],
             "ignore_values": [255], "ignore_index": 255}  # fmt: skip
    train = build_dataset("folder", tmp_path, "train", class_table=table)
    assert (
        train.spec.bands == ("band1", "band2", "band3", "band4", "band5") and 1500 < train.spec.mean[0] < 2500
    )
    sample = train[0]
    assert sample["image"].shape == (5, 24, 32) and abs(float(sample["image"].mean())) < 0.5
    assert int((sample["mask"] == 255).sum()) >= 4
    # Without a class table the masks must hold the spec's indices directly.
    spec = DatasetSpec("x", ("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 255, (0, 1, 2),
                       bands=train.spec.bands, mean=train.spec.mean, std=train.spec.std)  # fmt: skip
    val = build_dataset("folder", tmp_path, "val", spec=spec)
    assert val[2]["mask"].max() == 255
    small = DatasetSpec("y", ("a", "b"), ((0, 0, 0), (1, 1, 1)), 255, (0, 1), bands=spec.bands, mean=spec.mean,
                        std=spec.std)  # fmt: skip
    with pytest.raises(InputError, match=r"s0\.png: .*value 2"):
        build_dataset("folder", tmp_path, "val", spec=small)[0]
    wrong_bands = DatasetSpec("z", spec.class_names, spec.palette, 255, (0, 1, 2))
    with pytest.raises(InputError, match=r"s0\.tif: has 5 band\(s\), the dataset expects 3"):
        build_dataset("folder", tmp_path, "val", spec=wrong_bands)[0]


def test_folder_errors(tmp_path):
    spec = DatasetSpec("x", ("a", "b"), ((0, 0, 0), (1, 1, 1)), 255, (0, 1))
    with pytest.raises(InputError, match="no 'images' folder found"):
        FolderDataset(tmp_path, spec=spec)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="no images"):
        FolderDataset(tmp_path, spec=spec)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "c.png")
    with pytest.raises(
        InputError, match=r"1 image\(s\) without a mask .*: b\.png; .*1 mask\(s\) without an image: c"
    ):
        FolderDataset(tmp_path, spec=spec)
    (tmp_path / "masks" / "c.png").rename(tmp_path / "masks" / "b.png")
    with pytest.raises(ConfigError, match="needs a class table"):
        FolderDataset(tmp_path)
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(InputError, match=r"b\.png: mask is 8x9 px but the image is 8x8 px"):
        FolderDataset(tmp_path, spec=spec)[1]
    nan = np.ones((3, 8, 8), np.float32)
    nan[0, 1, 1] = np.nan
    write_tiff(tmp_path / "images" / "b.tif", nan)
    (tmp_path / "images" / "b.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(InputError, match=r"b\.tif: 1 pixel values are NaN"):
        FolderDataset(tmp_path, spec=spec)[1]


def test_class_table_validation(tmp_path):
    table = ClassTable.from_yaml(DUBAI_TABLE)
    assert table.labels.kind == "colour" and table.ignore_index == 6
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("classes: [{name: a, colour: '#000000'}]", "at least two classes"),
        ("classes: [{name: a, colour: red}, {name: b, colour: '#000001'}]", r"classes\[0\]\.colour: 'red'"),
        ("classes: [{name: a, colour: '#000000'}, {name: b}]", "every class needs a 'colour'"),
        (
            "classes: [{name: a, value: 0}, {name: b, value: 1}]\npalette: 3",
            r"palette: unknown key; \(known: classes, name, ignore_colours",
        ),
        ("classes: [{name: a, value: 0}, {name: b, value: 1}]\neval_classes: [c]", "'c' is not a class"),
        ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_index: 1", "ignore_index must be"),
        ("classes: [{name: a, colour: '#000000'}, {name: b, colour: '#000000'}]", "listed twice"),
        ("classes: [{name: a, value: 0}, {name: b, value: 0}]", "listed twice"),
        ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_values: [1]", "listed twice"),
        ("[unclosed", "unreadable class table"),
        (
            'classes: [{name: "a\\e[31m", value: 0}, {name: b, value: 1}]',
            r"class 0 has the name 'a\\x1b\[31m'",
        ),
        ("classes: [{name: a, value: 0}, {name: a, value: 1}]", "the class name 'a' is given twice"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            ClassTable.from_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        ClassTable.from_yaml(tmp_path / "none.yaml")


def test_a_name_that_is_not_utf8_is_skipped_with_a_warning_naming_it(tmp_path):
    spec = DatasetSpec("x", ("a", "b"), ((0, 0, 0), (1, 1, 1)), 255, (0, 1))
    for folder, name in (("images", "good.png"), ("masks", "good.png"), ("images", b"caf\xe9.png"),
                         ("masks", b"caf\xe9.png")):  # fmt: skip
        (tmp_path / folder).mkdir(exist_ok=True)
        target = os.path.join(os.fsencode(tmp_path / folder), name) if isinstance(name, bytes) else None
        pixels = np.zeros((8, 8, 3) if folder == "images" else (8, 8), np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "x.png")
        os.rename(tmp_path / folder / "x.png", target or tmp_path / folder / name)
    with pytest.warns(UserWarning) as caught:
        dataset = FolderDataset(tmp_path, spec=spec)
    assert [s["name"] for s in (dataset[i] for i in range(len(dataset)))] == ["images/good"]
    assert sorted(str(w.message) for w in caught) == [
        f"{tmp_path}/{folder}/caf\\xe9.png: skipped: its name is not UTF-8 text, which GDAL cannot open (rename it)"
        for folder in ("images", "masks")
    ]


def test_a_cached_selection_decodes_each_sample_once(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        write_tiff(tmp_path / "images" / f"s{k}.tif", rng.random((2, 16, 16)).astype(np.float32))
        Image.fromarray(rng.integers(0, 2, (16, 16), dtype=np.uint8)).save(tmp_path / "masks" / f"s{k}.png")
    table = {"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 1}]}
    folder = build_dataset("folder", tmp_path, "all", class_table=table)
    per_sample = 2 * 16 * 16 * 4 + 16 * 16  # float32 image and uint8 mask
    cached = SampleSelection([folder], [2, 0], cache_bytes=2 * per_sample)
    uncached = SampleSelection([folder], [2, 0], cache_bytes=per_sample - 1)  # not even one fits
    first = [cached[i] for i in range(2)]
    for item in (tmp_path / "images").iterdir():  # the files are gone: only the cache can answer
        item.unlink()
    for i in range(2):
        again = cached[i]
        assert again["name"] == first[i]["name"]
        assert torch.equal(again["image"], first[i]["image"]) and torch.equal(again["mask"], first[i]["mask"])
    image, _ = cached.load_arrays(0)
    image[:] = 7.0  # what a caller does with its arrays does not reach the cache
    assert torch.equal(cached[0]["image"], first[0]["image"])
    with pytest.raises(InputError, match=r"s2\.tif"):
        uncached[0]


CLASS_TABLE_CASES = [
    ("classes: [{name: a, value: 0.5}, {name: b, value: 1}]", r"classes\[0\]\.value: expected an integer, got 0\.5"),
    ("classes: [{name: a, value: true}, {name: b, value: 1}]", r"classes\[0\]\.value: expected an integer, got True"),
    ("classes: [{name: [a], value: 0}, {name: b, value: 1}]", r"classes\[0\]\.name: expected a string"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_values: [null]", r"ignore_values\[0\]: must not be null"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore_values: 7", r"ignore_values: expected a list"),
    ("classes: [{name: a, colour: '#000000'}, {name: b, colour: '#000001'}]\nignore_colours: 3",
     r"ignore_colours: expected a list"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [x]\nstd: [1]",
     r"mean\[0\]: expected a number, got 'x'"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [.inf]\nstd: [1]",
     r"mean\[0\]: must be a finite number, got inf"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nbands: [r]\nmean: [1]\nstd: [0]",
     r"std\[0\]: must be positive"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nname: {x: 1}", r"name: expected a string"),
    ("- just\n- a list", r"class table must be a mapping of keys, not a list"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), CLASS_TABLE_CASES)
def test_class_tables_with_wrong_types_name_the_key(text, message, tmp_path) -> None:
    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"classes\.yaml: " + message):
        ClassTable.from_yaml(path)
