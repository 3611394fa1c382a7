"""Hostile input: every malformed input gets one specific line and a non-zero exit, never garbage output.

One table, run through the real command line (`bicorseg predict`) and the folder dataset that
training and evaluation use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from PIL import Image

from bicorseg.cli.main import main
from bicorseg.data import build_dataset
from bicorseg.errors import BicorsegError
from tests.helpers.inference import random_image, write_geotiff


def _predict(inputs: list[Path], checkpoint: Path, output: Path, capsys) -> tuple[int, str]:
    status = main(
        ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "--output", str(output), "--quiet"]
    )
    return status, capsys.readouterr().err


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- predict: (name, how to make the input, expected message) ------------------------------------


def _zero_size(d: Path) -> Path:
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png"


def _not_an_image(d: Path) -> Path:
    (d / "notes.tif").write_text("this is a text file with an image extension\n")
    return d / "notes.tif"


def _truncated_png(d: Path) -> Path:
    Image.fromarray(random_image(3, 64, 64).transpose(1, 2, 0)).save(d / "cut.png")
    data = (d / "cut.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    return d / "cut.png"


def _truncated_geotiff(d: Path) -> Path:
    write_geotiff(d / "cut.tif", random_image(3, 64, 64))
    data = (d / "cut.tif").read_bytes()
    (d / "cut.tif").write_bytes(data[:4096])  # the header and the first pixels: the rest cannot be read
    return d / "cut.tif"


def _huge_band_count(d: Path) -> Path:
    return write_geotiff(d / "hyper.tif", random_image(200, 16, 16))


def _empty_folder(d: Path) -> Path:
    (d / "nothing").mkdir()
    return d / "nothing"


def _missing(d: Path) -> Path:
    return d / "does_not_exist.tif"


PREDICT_CASES = [
    ("zero-size file", _zero_size, r"cannot read .*empty\.png"),
    ("text file named .tif", _not_an_image, r"cannot read .*notes\.tif: not an image"),
    ("truncated PNG", _truncated_png, r"cannot read .*cut\.png"),
    (
        "truncated GeoTIFF",
        _truncated_geotiff,
        r"cannot read .*cut\.tif: .*cut\.tif, band 1: IReadBlock failed",
    ),
    (
        "200 bands for a 3-band model",
        _huge_band_count,
        r"hyper\.tif has 200 band\(s\) but the checkpoint .* expects 3",
    ),
    ("empty folder", _empty_folder, r"no images in folder .*nothing"),
    ("missing file", _missing, r"input not found: .*does_not_exist\.tif"),
]


@pytest.mark.parametrize(("case", "make", "message"), PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_refuses_malformed_input(case, make, message, tmp_path, checkpoint, capsys) -> None:
    source = make(tmp_path)
    status, err = _predict([source], checkpoint, tmp_path / "out" / "maps", capsys)
    assert status != 0, case
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()  # not even an empty folder


def test_one_pixel_image_is_predicted(tmp_path, checkpoint, capsys) -> None:
    source = write_geotiff(tmp_path / "dot.tif", random_image(3, 1, 1))
    status, err = _predict([source], checkpoint, tmp_path / "out", capsys)
    assert status == 0, err
    with rasterio.open(tmp_path / "out" / "dot.tif") as out:
        assert (out.width, out.height) == (1, 1)
        assert out.read(1)[0, 0] < 4


def test_symlink_loop_in_an_input_folder_is_not_followed_forever(tmp_path, checkpoint, capsys) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_geotiff(folder / "a.tif", random_image(3, 40, 40))
    os.symlink(folder, folder / "loop")  # tiles/loop -> tiles
    status, err = _predict([folder], checkpoint, tmp_path / "out", capsys)
    assert status == 0, err
    assert _files(tmp_path / "out") == ["a.qml", "a.tif", "a.tif.aux.xml"]


# -- labelled data: the folder dataset used by train and evaluate --------------------------------


def _pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.transpose(1, 2, 0)).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def _table(root: Path) -> Path:
    table = {
        "name": "toy",
        "classes": [
            {"name": "ground", "colour": [255, 255, 255]},
            {"name": "building", "colour": [0, 0, 255]},
        ],
        "ignore_colours": [[0, 0, 0]],
    }
    path = root / "classes.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def _load_all(root: Path, **options) -> None:
    dataset = build_dataset("folder", root, split="all", **options)
    for index in range(len(dataset)):
        dataset[index]


def test_mask_of_another_size_is_named(tmp_path) -> None:
    _pair(tmp_path, "a", random_image(3, 32, 32), np.full((16, 32, 3), 255, np.uint8))
    with pytest.raises(BicorsegError, match=r"a\.png.*32.*16|a\.png.*16.*32"):
        _load_all(tmp_path, class_table=_table(tmp_path))


def test_unknown_colour_is_named(tmp_path) -> None:
    mask = np.full((32, 32, 3), 255, np.uint8)
    mask[5, 5] = (12, 34, 56)
    _pair(tmp_path, "a", random_image(3, 32, 32), mask)
    with pytest.raises(
        BicorsegError, match=r"a\.png: 1 pixels have colours not in the class table.*\(12, 34, 56\)"
    ):
        _load_all(tmp_path, class_table=_table(tmp_path))


def test_label_value_out_of_range_is_named(tmp_path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0] = 9
    _pair(tmp_path, "a", random_image(3, 32, 32), mask)
    table = {"name": "toy", "classes": [{"name": "x", "value": 0}, {"name": "y", "value": 1}]}
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump(table))
    with pytest.raises(BicorsegError, match=r"a\.png: 1 pixels have values not in the class table.*value 9"):
        _load_all(tmp_path, class_table=tmp_path / "classes.yaml")


def test_empty_dataset_folder_is_refused(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(BicorsegError, match=r"no images .* in .*images"):
        _load_all(tmp_path, class_table=_table(tmp_path))
