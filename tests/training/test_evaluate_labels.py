"""Masks are decoded with the label encoding stored in the checkpoint (evaluate, heatmaps --label).

A checkpoint trained on a folder dataset whose class table lists colours or raw values evaluates
the same kind of masks with nothing but ``--checkpoint`` and the folder; masks that do not fit the
encoding are an error naming the file and the value, never read as class indices.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg import BiCoRSeg, load_model, save_checkpoint
from bicorseg.checkpoint import load_checkpoint
from bicorseg.cli.main import main
from bicorseg.data import ClassTable, FolderDataset, LabelTable
from bicorseg.errors import ConfigError, InputError
from bicorseg.inference.heatmaps import read_label
from bicorseg.inference.predictor import model_info
from bicorseg.spec import DatasetSpec, LabelEncoding
from tests.helpers import prints_warnings
from tests.helpers.models import tiny_config

COLOURS = [(255, 255, 255), (0, 0, 255), (0, 255, 0), (255, 0, 0)]
COLOUR_TABLE = {
    "name": "toy-colours",
    "classes": [{"name": f"c{i}", "colour": list(c)} for i, c in enumerate(COLOURS)],
    "ignore_colours": [[0, 0, 0]],
}
# LoveDA's layout: raw 0 is "no data", raw 1..4 are the classes 0..3 (the ignore index is 4)
VALUE_TABLE = {
    "name": "toy-values",
    "classes": [{"name": f"c{i}", "value": i + 1} for i in range(4)],
    "ignore_values": [0],
}


def _folder(
    root: Path, kind: str, count: int = 2, sizes: tuple[tuple[int, int], ...] = ((64, 64),)
) -> list[np.ndarray]:
    """Images and masks under ``root`` (sizes cycled); returns the class-index truth (4 = ignore) of each."""
    rng = np.random.default_rng(7)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    truths = []
    for i in range(count):
        size = sizes[i % len(sizes)]
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        truth = rng.integers(0, 5, size).astype(np.uint8)  # 4 = not labelled
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        if kind == "colours":
            lut = np.array([*COLOURS, (0, 0, 0)], np.uint8)
            mask = lut[truth]
        else:
            mask = np.where(truth == 4, 0, truth + 1).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        truths.append(truth)
    return truths


def _checkpoint(path: Path, spec: DatasetSpec) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(BiCoRSeg(tiny_config(num_classes=4), dataset=spec), path)


def _by_hand(checkpoint: Path, root: Path, truths: list[np.ndarray]) -> np.ndarray:
    model, spec = load_model(checkpoint), load_checkpoint(checkpoint).dataset
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    matrix = np.zeros((4, 4), np.int64)
    for i, truth in enumerate(truths):
        image = torch.from_numpy(np.asarray(Image.open(root / "images" / f"{i}.png"), np.float32))
        with torch.no_grad():
            pred = model(((image.permute(2, 0, 1) - mean) / std)[None])[0].argmax(0).numpy()
        keep = truth != 4
        np.add.at(matrix, (truth[keep].astype(np.int64), pred[keep]), 1)
    return matrix


def _evaluate(checkpoint: Path, root: Path, output: Path, capsys, *options: str) -> tuple[int, str]:
    argv = ["evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root", root, "--split", "all"]
    code = main(
        [
            str(a)
            for a in [*argv, *(options or ["--batch-size", "1"]), "--precision", "fp32", "--output", output]
        ]
    )
    return code, capsys.readouterr().err


def test_evaluate_a_folder_of_images_of_different_sizes_with_the_default_batch(
    tmp_path: Path, capsys
) -> None:
    sizes = ((64, 64), (96, 64), (64, 96), (64, 64), (96, 64))  # one default batch (4) holds three sizes
    truths = _folder(tmp_path / "data", "values", count=5, sizes=sizes)
    checkpoint = _checkpoint(
        tmp_path / "model.ckpt", FolderDataset(tmp_path / "data", class_table=VALUE_TABLE).spec
    )
    code, err = _evaluate(
        checkpoint, tmp_path / "data", tmp_path / "metrics.json", capsys, "--num-workers", "0"
    )
    assert code == 0, err
    matrix = np.array(json.loads((tmp_path / "metrics.json").read_text())["confusion_matrix"])
    assert np.array_equal(matrix, _by_hand(checkpoint, tmp_path / "data", truths))


@pytest.mark.parametrize("kind", ["colours", "values"])
def test_evaluate_decodes_masks_with_the_checkpoint_encoding(kind: str, tmp_path: Path, capsys) -> None:
    train, test = tmp_path / "train", tmp_path / "test"
    _folder(train, kind)
    truths = _folder(test, kind)
    table = COLOUR_TABLE if kind == "colours" else VALUE_TABLE
    spec = FolderDataset(train, class_table=table).spec  # what `train` stores in the checkpoint
    checkpoint = _checkpoint(tmp_path / "model.ckpt", spec)
    assert load_checkpoint(checkpoint).dataset.label_encoding.kind == kind
    code, err = _evaluate(checkpoint, test, tmp_path / "metrics.json", capsys)  # no --class-table
    assert code == 0, err
    matrix = np.array(json.loads((tmp_path / "metrics.json").read_text())["confusion_matrix"])
    assert np.array_equal(matrix, _by_hand(checkpoint, test, truths))
    assert matrix.sum() == sum(int((t != 4).sum()) for t in truths)


def test_a_folder_without_the_split_names_the_option_to_give(tmp_path: Path, capsys) -> None:
    _folder(tmp_path / "data", "values")
    checkpoint = _checkpoint(
        tmp_path / "model.ckpt", FolderDataset(tmp_path / "data", class_table=VALUE_TABLE).spec
    )
    argv = ["evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root", tmp_path / "data"]
    assert main([str(a) for a in argv]) == 2  # the default split, test, is no sub-folder of it
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no 'test' sub-folder; give --split all (the whole folder)" in lines[0], lines


@prints_warnings
def test_evaluate_warns_in_one_line_like_the_other_commands(tmp_path: Path, capsys) -> None:
    _folder(tmp_path / "data", "values")
    checkpoint = _checkpoint(
        tmp_path / "model.ckpt", FolderDataset(tmp_path / "data", class_table=VALUE_TABLE).spec
    )
    (tmp_path / "data" / "images" / b"caf\xe9.png".decode("utf-8", "surrogateescape")).write_bytes(b"")
    code, err = _evaluate(checkpoint, tmp_path / "data", tmp_path / "metrics.json", capsys)
    assert code == 0, err
    shown = f"{tmp_path / 'data' / 'images'}/caf\\xe9.png"
    assert f"bicorseg evaluate: warning: {shown}: skipped: its name is not UTF-8 text" in err
    assert "BicorsegWarning" not in err


@pytest.mark.parametrize(
    "kind, bad, message",
    [
        ("colours", (12, 34, 56), r"1\.png: 1 pixels have colours not in the class table.*\(12, 34, 56\)"),
        ("values", 9, r"1\.png: 1 pixels have values not in the class table.*value 9"),
    ],
)
def test_evaluate_refuses_masks_outside_the_encoding(kind, bad, message, tmp_path: Path, capsys) -> None:
    _folder(tmp_path / "data", kind)
    mask_path = tmp_path / "data" / "masks" / "1.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[3, 5] = bad
    Image.fromarray(mask).save(mask_path)
    table = COLOUR_TABLE if kind == "colours" else VALUE_TABLE
    spec = FolderDataset(tmp_path / "data", class_table=table).spec
    checkpoint = _checkpoint(tmp_path / "model.ckpt", spec)
    code, err = _evaluate(checkpoint, tmp_path / "data", tmp_path / "metrics.json", capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "metrics.json").exists()


def test_label_encoding_round_trip() -> None:
    table = ClassTable.from_dict(COLOUR_TABLE)
    spec = table.spec(("r", "g", "b"), (1.0, 2.0, 3.0), (1.0, 1.0, 1.0))
    assert spec.label_encoding == LabelEncoding("colours", tuple(COLOURS), ((0, 0, 0),))
    assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    incomplete = spec.to_dict()
    del incomplete["label_encoding"]  # every key of the first format is required
    with pytest.raises(ConfigError, match="label_encoding: is required"):
        DatasetSpec.from_dict(incomplete)
    nested = spec.to_dict()
    del nested["label_encoding"]["ignore"]  # in the sections too
    with pytest.raises(ConfigError, match=r"label_encoding\.ignore: is required"):
        DatasetSpec.from_dict(nested)
    values = ClassTable.from_dict(VALUE_TABLE).labels
    assert values.encoding() == LabelEncoding("values", (1, 2, 3, 4), (0,))
    assert LabelTable.identity(4, 4).encoding() == LabelEncoding()
    with pytest.raises(ConfigError, match="4 classes but the label encoding lists 2"):
        DatasetSpec(
            "x", ("a", "b", "c", "d"), tuple(COLOURS), 4, (0,), label_encoding=LabelEncoding("values", (1, 2))
        )


# -- heatmaps --label -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["colours", "values"])
def test_heatmap_label_uses_the_checkpoint_encoding(kind: str, tmp_path: Path) -> None:
    truths = _folder(tmp_path / "data", kind, count=1, sizes=((48, 48),))
    table = COLOUR_TABLE if kind == "colours" else VALUE_TABLE
    spec = FolderDataset(tmp_path / "data", class_table=table).spec
    model = BiCoRSeg(tiny_config(num_classes=4), dataset=spec)
    info = model_info(model, "model.ckpt")
    labels = read_label(tmp_path / "data" / "masks" / "0.png", info, (48, 48), (48, 48))
    assert np.array_equal(labels, truths[0])  # 4 = the ignore index, drawn blank
    half = read_label(tmp_path / "data" / "masks" / "0.png", info, (48, 48), (24, 24))
    assert np.array_equal(half, truths[0][1::2, 1::2])


def test_heatmap_label_outside_the_encoding_is_refused(tmp_path: Path, capsys) -> None:
    _folder(tmp_path / "data", "values", count=1, sizes=((48, 48),))
    label = tmp_path / "data" / "masks" / "0.png"
    raw = np.asarray(Image.open(label)).copy()
    raw[0, 0] = 9  # not a value of the class table
    Image.fromarray(raw).save(label)
    spec = FolderDataset(tmp_path / "data", class_table=VALUE_TABLE).spec
    checkpoint = _checkpoint(tmp_path / "model.ckpt", spec)
    info = model_info(load_model(checkpoint), str(checkpoint))
    with pytest.raises(InputError, match=r"0\.png: 1 pixels have values not in the class table.*value 9"):
        read_label(label, info, (48, 48), (48, 48))
    code = main(["heatmaps", str(tmp_path / "data" / "images" / "0.png"), "--checkpoint", str(checkpoint),
                 "--output", str(tmp_path / "out"), "--label", str(label), "--tile", "64"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "value 9" in err and "0.png" in err
    assert not (tmp_path / "out" / "0_heatmaps.png").exists()


def test_heatmap_label_of_another_size_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path / "data", "values", count=1, sizes=((48, 48),))
    spec = FolderDataset(tmp_path / "data", class_table=VALUE_TABLE).spec
    info = model_info(BiCoRSeg(tiny_config(num_classes=4), dataset=spec), "model.ckpt")
    with pytest.raises(InputError, match=r"0\.png is 48 x 48 px but the input is 64 x 48"):
        read_label(tmp_path / "data" / "masks" / "0.png", info, (48, 64), (48, 64))


def test_heatmap_colour_label_for_an_index_checkpoint(tmp_path: Path) -> None:
    """A checkpoint trained on index masks reads a colour label by its class colours, strictly."""
    spec = DatasetSpec("toy", ("a", "b", "c", "d"), tuple(COLOURS), 4, (0, 1, 2, 3))
    info = model_info(BiCoRSeg(tiny_config(num_classes=4), dataset=spec), "model.ckpt")
    truth = np.random.default_rng(0).integers(0, 4, (32, 40)).astype(np.uint8)
    colours = np.array(COLOURS, np.uint8)[truth]
    colours[0, 0] = (0, 0, 0)  # an eroded boundary: not a class colour
    Image.fromarray(colours).save(tmp_path / "label.png")
    with pytest.raises(
        InputError, match=r"label\.png: 1 pixels have colours not in the class table.*\(0, 0, 0\)"
    ):
        read_label(tmp_path / "label.png", info, (32, 40), (32, 40))
    table = ClassTable.from_dict(COLOUR_TABLE).labels  # --class-table: black is "not labelled"
    labels = read_label(tmp_path / "label.png", info, (32, 40), (32, 40), table)
    expected = truth.copy()
    expected[0, 0] = 4
    assert np.array_equal(labels, expected)
