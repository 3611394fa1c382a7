"""End to end on CPU with the tiny config: train a few steps, resume, evaluate, submit (all via the CLI)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bicorseg import load_model
from bicorseg.atomic import find_temps
from bicorseg.checkpoint import load_checkpoint
from bicorseg.errors import InputError
from bicorseg.models.hub import Tiling
from tests.helpers.training import TINY, cli, column, read_metrics

LOSS_TERMS = (
    "main_softce",
    "main_dice",
    "aux_softce",
    "heatmap_0",
    "heatmap_1",
    "fisher_0",
    "fisher_1",
    "total",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-class tiny run of 2 epochs (4 steps each), then resumed to 3 epochs."""
    run = tmp_path_factory.mktemp("e2e") / "run"
    assert cli("train", "--config", TINY, "--model.num_classes", "7", "--output", run) == 0
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], first["global_step"]) == (2, 8)
    assert cli("train", "--config", TINY, "--model.num_classes", "7", "--trainer.max_epochs", "3",
               "--output", run, "--resume") == 0  # fmt: skip
    return run


def test_run_folder_and_logs(trained: Path) -> None:
    for name in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "val_metrics.json"):
        assert (trained / name).is_file(), name
    assert list((trained / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(trained)
    for term in LOSS_TERMS:
        steps = [s for s, _ in column(rows, f"train/{term}_step")]
        assert steps == list(range(12)), term  # every step of both invocations, in order
        assert len(column(rows, f"train/{term}_epoch")) == 3
    for metric in ("val/miou", "val/mean_f1", "val/oa", "val/loss", "val/iou_class_0"):
        assert len(column(rows, metric)) == 3, metric
    assert "max_epochs: 3" in (trained / "config.yaml").read_text()


def test_resumed_checkpoint_state(trained: Path) -> None:
    last = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (3, 12)
    optimizer = last["optimizer_states"][0]
    assert optimizer["fast_steps"] == 12 and optimizer["k"] == 5  # Lookahead state travels along
    assert last["lr_schedulers"][0]["last_epoch"] == 3
    assert set(last["bicorseg"]) >= {"model_config", "dataset", "train_config"}
    # the size the model trained on is its default tile for predict, heatmaps and evaluate
    assert last["bicorseg"]["tiling"] == {"tile": 64, "overlap": 0.25}
    assert load_checkpoint(trained / "checkpoints" / "best.ckpt").tiling == Tiling(64, 0.25, "checkpoint")
    model = load_model(trained / "checkpoints" / "best.ckpt")
    assert model.num_classes == 7 and model.dataset.name == "synthetic"


def test_evaluate_matches_validation(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "metrics.json"
    assert cli("evaluate", "--checkpoint", trained / "checkpoints" / "last.ckpt", "--dataset", "synthetic",
               "--split", "val", "--precision", "fp32", "--output", out) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "test-time augmentation: none" in printed and "evaluated on: patches" in printed
    report = json.loads(out.read_text())
    validation = json.loads((trained / "val_metrics.json").read_text())
    # the evaluate command and the validation of the last epoch see the same weights and samples
    assert report["confusion_matrix"] == validation["confusion_matrix"]
    assert report["miou"] == pytest.approx(validation["miou"])
    assert report["convention"]["classes_averaged"] == [f"class_{i}" for i in range(7)]
    assert cli("evaluate", "--checkpoint", trained / "checkpoints" / "last.ckpt", "--dataset", "synthetic",
               "--split", "val", "--tta", "lr", "--whole-tiles", "--tile", "64", "--limit", "2") == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "test-time augmentation: lr" in printed and "whole tiles" in printed


def _loveda_test_root(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for domain, name in zip(["Urban", "Rural", "Rural"], names):
        folder = root / "Test" / domain / "images_png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(folder / name)
    return root


@pytest.mark.slow
def test_submit_writes_a_valid_archive(trained: Path, tmp_path: Path) -> None:
    root = _loveda_test_root(tmp_path / "loveda", ["3001.png", "5002.png"])
    out = tmp_path / "submission.zip"
    assert cli("submit", "loveda", "--checkpoint", trained / "checkpoints" / "best.ckpt", "--root", root,
               "--output", out) == 0  # fmt: skip
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["3001.png", "5002.png"]  # flat, same names
        for name in archive.namelist():
            image = Image.open(io.BytesIO(archive.read(name)))
            assert (image.mode, image.size) == ("L", (1024, 1024))
            assert np.asarray(image).max() <= 6
    assert find_temps(tmp_path) == []  # no temporary file left behind


def test_submit_refusals(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bicorseg.cli.submit import validate_archive

    root = _loveda_test_root(tmp_path / "loveda", ["7.png"])
    four = tmp_path / "four"
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "1", "--data.val_split", "null",
               "--output", four) == 0  # fmt: skip
    capsys.readouterr()
    assert cli("submit", "loveda", "--checkpoint", four / "checkpoints" / "last.ckpt", "--root", root,
               "--output", tmp_path / "x.zip") == 2  # fmt: skip
    assert "4 classes; LoveDA has 7" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        archive.writestr("predictions/7.png", b"")
    with pytest.raises(InputError, match="inside folders"):
        validate_archive(nested, ["7.png"])
    wrong = tmp_path / "wrong.zip"
    buffer = io.BytesIO()
    Image.fromarray(np.full((1024, 1024), 9, np.uint8)).save(buffer, format="PNG")
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("7.png", buffer.getvalue())
    with pytest.raises(InputError, match="value 9"):
        validate_archive(wrong, ["7.png"])


def test_bf16_mixed_precision(tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    assert cli("train", "--config", TINY, "--trainer.precision", "bf16", "--trainer.max_epochs", "1",
               "--output", run) == 0  # fmt: skip
    totals = [v for _, v in column(read_metrics(run), "train/total_step")]
    assert len(totals) == 4 and all(np.isfinite(totals))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # master weights


def test_a_working_resolution_trains_on_pooled_labels(tmp_path: Path) -> None:
    """With ``model.downsample`` 2 the objective runs at half resolution on labels pooled to it, and
    validation scores full-size maps."""
    run = tmp_path / "half"
    assert cli("train", "--config", TINY, "--model.downsample", "2", "--trainer.max_epochs", "1",
               "--output", run) == 0  # fmt: skip
    rows = read_metrics(run)
    assert len([v for _, v in column(rows, "train/total_step") if np.isfinite(v)]) == 4
    assert len(column(rows, "val/miou")) == 1
    assert load_model(run / "checkpoints" / "last.ckpt").config.downsample == 2
