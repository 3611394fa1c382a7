"""Checkpoints that would run code when unpickled are refused by the one reader of torch files.

Every command that reads a checkpoint, ``load_model``, Lightning's resume reader and pretrained
weights refuse in one line a file whose unpickling would create a file, and the file is never created.
"""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch

from bicorseg import load_model
from bicorseg.errors import CheckpointError
from bicorseg.models import BiCoRSeg
from bicorseg.models.hub import metadata
from tests.helpers.cli import refused, run_cli
from tests.helpers.inference import random_image, spec, write_geotiff
from tests.helpers.models import tiny_config


class _CreatesFile:
    """Unpickling this object calls ``Path.touch(marker)``: the stand-in for any code a file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file laid out like a bicorseg training checkpoint, with the payload inside."""
    model = BiCoRSeg(tiny_config(), dataset=spec())
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            **metadata(model),
            "state_dict": state,
            "bicorseg": metadata(model),
            "global_step": 1,
            "optimizer_states": [],
            "extra": {"payload": _CreatesFile(marker)},
        },
        path,
    )
    return path


def _commands(tmp: Path, evil: Path) -> dict[str, list]:
    image = write_geotiff(tmp / "in" / "scene.tif", random_image(3, 40, 40))
    return {
        "predict": ["predict", image, "--checkpoint", evil, "--output", tmp / "out"],
        "evaluate": ["evaluate", "--checkpoint", evil, "--dataset", "synthetic"],
        "heatmaps": ["heatmaps", image, "--checkpoint", evil, "--output", tmp / "out"],
        "submit": ["submit", "loveda", "--checkpoint", evil, "--root", tmp / "in", "--output", tmp / "s.zip"],
        "export": ["export", "onnx", "--checkpoint", evil, "--output", tmp / "m.onnx"],
        "convert": ["convert", evil, "--output", tmp / "out.ckpt", "--num-classes", "4"],
        "train --resume": ["train", "--config", "tiny-test", "--output", tmp / "run", "--resume", evil],
    }


COMMANDS = ["predict", "evaluate", "heatmaps", "submit", "export", "convert", "train --resume"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_that_would_run_code_is_refused(command, tmp_path, capsys) -> None:
    marker = tmp_path / "code_ran"
    evil = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    line = refused(capsys, *_commands(tmp_path, evil)[command])
    assert "refusing to read checkpoint" in line and "evil.ckpt" in line and "could run code" in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "out.ckpt").exists() and not (tmp_path / "s.zip").exists()


@pytest.mark.slow
def test_load_model_and_lightnings_resume_reader_refuse_it(tmp_path) -> None:
    from bicorseg.training.run import AtomicCheckpointIO

    marker = tmp_path / "code_ran"
    evil = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refusing to read checkpoint"):
        load_model(evil)
    # the reader Lightning's trainer.fit(ckpt_path=...) calls, even when asked for weights_only=False
    with pytest.raises(CheckpointError, match="refusing to read checkpoint"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    # pretrained backbone weights (model.pretrained: FILE) go through the same reader
    with pytest.raises(CheckpointError, match=r"refusing to read pretrained weights .*evil\.ckpt"):
        BiCoRSeg(tiny_config(backbone="convnext_tiny", pretrained=str(evil)))
    assert not marker.exists()


@pytest.mark.slow
def test_real_training_checkpoints_load_without_unpickling_objects(tmp_path, capsys) -> None:
    """best.ckpt and last.ckpt of a real run hold only tensors and plain data (no allow-list needed)."""
    status, lines = run_cli(capsys, "train", "--config", "tiny-test", "--output", tmp_path / "run")
    assert status == 0, lines
    for name in ("best", "last"):
        path = tmp_path / "run" / "checkpoints" / f"{name}.ckpt"
        assert isinstance(torch.load(path, weights_only=True), dict)
        assert load_model(path).config.num_classes == 4
    # and a resumed run reads last.ckpt through the same reader
    status, lines = run_cli(
        capsys, "train", "--config", "tiny-test", "--output", tmp_path / "run", "--resume",
        "--trainer.max_epochs", "3",
    )  # fmt: skip
    assert status == 0, lines
