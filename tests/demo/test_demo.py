"""``bicorseg demo`` end to end with a tiny budget: every output exists and is what it claims to be."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from bicorseg.checkpoint import load_checkpoint
from bicorseg.cli.main import main
from bicorseg.demo import DEMO_CRS, DEMO_DATASET
from bicorseg.demo.pipeline import DemoConfig
from bicorseg.errors import ConfigError
from bicorseg.models.hub import Tiling

# Small scenes, a narrow model and a few steps: the whole run takes well under a minute on two cores.
TINY = [
    "--minutes", "2", "--train-scenes", "8", "--scene-size", "128", "--test-size", "160",
    "--crop-size", "96", "--train-batch-size", "2", "--width", "32", "--steps", "6",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_demo_writes_every_output(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--seed", "3", *TINY]) == 0
    summary = capsys.readouterr().out
    for name in (
        "model.ckpt", "scene.tif", "prediction.tif", "prediction_color.png", "heatmaps.png", "report.html"
    ):  # fmt: skip
        assert (out / name).is_file(), name
        assert name in summary  # the summary says where everything went
    assert "mIoU" in summary

    with rasterio.open(out / "scene.tif") as scene, rasterio.open(out / "prediction.tif") as pred:
        assert scene.count == 3 and scene.dtypes[0] == "uint8"
        assert scene.crs.to_string() == DEMO_CRS
        assert pred.crs == scene.crs and pred.transform == scene.transform
        assert (pred.width, pred.height) == (scene.width, scene.height) == (160, 160)
        assert pred.count == 1 and pred.dtypes[0] == "uint8"
        classes = pred.read(1)
    assert classes.max() < DEMO_DATASET.num_classes  # every pixel valid: no nodata, no stray value

    colour = np.asarray(Image.open(out / "prediction_color.png").convert("RGB"))
    assert colour.shape == (160, 160, 3)
    assert np.array_equal(colour, np.asarray(DEMO_DATASET.palette, np.uint8)[classes])
    with Image.open(out / "heatmaps.png") as figure:
        assert figure.size[0] > 200 and figure.size[1] > 200

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 < metrics["oa"] <= 1.0
    assert list(metrics["per_class"]) == list(DEMO_DATASET.class_names)
    for scores in metrics["per_class"].values():
        assert scores["iou"] is None or 0.0 <= scores["iou"] <= 1.0
    ious = [s["iou"] for s in metrics["per_class"].values() if s["iou"] is not None]
    assert math.isclose(metrics["miou"], sum(ious) / len(ious), rel_tol=1e-9)
    assert metrics["convention"]["training_steps"] == metrics["convention"]["training_steps_planned"] == 6
    page = (out / "report.html").read_text(encoding="utf-8")
    # image, prediction, truth, errors and each layer's heatmap of each class
    assert (
        "held-out scene" in page and page.count("data:image/png;base64,") == 4 + 2 * DEMO_DATASET.num_classes
    )
    rows = re.findall(r'<tr class="confusion-row"><td class="name">([^<]*)</td>(.*?)</tr>', page)
    confusion = np.asarray(metrics["confusion_matrix"])
    present = [i for i in range(len(confusion)) if confusion[i].sum() or confusion[:, i].sum()]
    assert [name for name, _ in rows] == [DEMO_DATASET.class_names[i] for i in present]
    shown = [
        [int(v.replace(",", "")) for v in re.findall(r">([\d,]+)</td>", cells)[: len(present)]]
        for _, cells in rows
    ]
    assert shown == confusion[np.ix_(present, present)].tolist()  # the page's confusion is the scores'

    checkpoint = load_checkpoint(out / "model.ckpt")
    assert checkpoint.dataset == DEMO_DATASET
    assert checkpoint.model_config.num_classes == DEMO_DATASET.num_classes
    assert checkpoint.tiling == Tiling(
        DemoConfig.tile, 0.25, "checkpoint"
    )  # predict's default: the demo's tile
    assert (out / "heatmaps").is_dir() and any((out / "heatmaps").glob("*.tif"))
    assert [p.name for p in out.glob(".*")] == [".bicorseg-demo"], "temporary files left behind"


def test_demo_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output", "--minutes", "--seed"):
        assert option in text
    assert "--scene-size" not in text  # test-only options stay hidden


def test_refuses_a_foreign_non_empty_folder(tmp_path, capsys) -> None:
    (tmp_path / "data").mkdir()  # could be someone's data: the demo must not replace it
    assert main(["demo", "--output", str(tmp_path), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "data").is_dir()


def test_too_short_a_budget_is_a_clear_error(tmp_path, capsys) -> None:
    code = main(["demo", "--output", str(tmp_path), "--minutes", "0.05", *TINY[2:]])
    assert code == 2
    assert "give more time" in capsys.readouterr().err


@pytest.mark.slow
def test_the_time_budget_stops_training_and_says_so(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    # far more steps than fit: Lightning's Timer stops training, everything after it still runs
    assert main(["demo", "--output", str(out), *TINY[2:-2], "--minutes", "0.4", "--steps", "100000"]) == 0
    summary = capsys.readouterr().out
    convention = json.loads((out / "metrics.json").read_text())["convention"]
    assert 0 < convention["training_steps"] < convention["training_steps_planned"] == 100000
    assert "time budget stopped training" in " ".join(summary.split())
    assert "stopped by the time budget" in (out / "report.html").read_text(encoding="utf-8")
    assert (out / "prediction.tif").is_file() and (out / "model.ckpt").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"minutes": 0}, "^minutes: must be positive"),
        ({"scene_size": 64, "crop_size": 96}, "smaller than the crop"),
        ({"crop_size": 100}, "multiple of 32"),
        ({"train_scenes": 1, "batch_size": 2}, "batch"),
    ],
)
def test_invalid_settings_are_refused(tmp_path, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        DemoConfig(output=tmp_path, **options)


@pytest.mark.slow
def test_fixed_steps_make_the_demo_reproducible(tmp_path, capsys) -> None:
    runs = []
    out = tmp_path / "demo"
    for _ in range(2):  # the second run replaces the first one's outputs in the same folder
        assert main(["demo", "--output", str(out), *TINY[:-2], "--steps", "3"]) == 0
        with rasterio.open(out / "prediction.tif") as src:
            runs.append((src.read(1), json.loads((out / "metrics.json").read_text())))
    (first, metrics_a), (second, metrics_b) = runs
    assert np.array_equal(first, second)
    assert metrics_a["confusion_matrix"] == metrics_b["confusion_matrix"]
    assert metrics_a["convention"]["training_steps"] == 3
    assert "training (steps)" in capsys.readouterr().out
