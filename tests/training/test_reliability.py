"""Reliability: resuming after a killed run, NaN/Inf losses (stop or skip), never a bad checkpoint file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from training_helpers import REPO, TINY, one_thread  # noqa: F401

from bicorseg.training.config import load_config
from bicorseg.training.module import NonFiniteError
from bicorseg.training.run import train

# 16 steps per epoch, a checkpoint after every step
LONG = {"data.synthetic_size": [64, 64, 8], "trainer.checkpoint_every_n_steps": 1, "trainer.max_epochs": 50}


class Recorder(L.Callback):
    """Where a run starts (epoch, step, first batch index) and how it ends."""

    def __init__(self) -> None:
        self.start: tuple[int, int] | None = None
        self.first_batch: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = (trainer.current_epoch, trainer.global_step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.first_batch is None:
            self.first_batch = batch_idx


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _step_of(path: Path) -> int:
    try:
        return int(_load(path)["global_step"])
    except Exception:  # being replaced right now: try again
        return -1


def test_resume_after_kill_continues_at_same_epoch_and_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [f"--{k}={v}" for k, v in LONG.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bicorseg.cli.main", "train", "--config", TINY, "--output", str(run), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while not (last.is_file() and _step_of(last) >= 19):  # inside the second epoch
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not reach step 19 in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    for path in (run / "checkpoints").iterdir():  # whatever was on disk is whole
        if not path.name.startswith("."):
            _load(path)
    saved = _load(last)
    epoch, step = saved["epoch"], saved["global_step"]
    assert 19 <= step < 16 * 50

    recorder = Recorder()
    config = load_config(TINY, {**LONG, "trainer.max_steps": step + 5})
    result = train(config, run, resume="auto", callbacks=[recorder])
    assert recorder.start == (epoch, step)
    assert recorder.first_batch == step % 16  # mid-epoch: continues with the next batch of that epoch
    assert result.global_step == step + 5
    assert not list((run / "checkpoints").glob(".*.tmp"))  # temporary files of the killed run are gone


class PoisonBatch(L.Callback):
    """Puts a NaN into the input of the batch at ``step`` (or inf into a weight after it)."""

    def __init__(self, step: int, weights: bool = False) -> None:
        self.step, self.weights = step, weights

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step and not self.weights:
            batch["image"][0, 0, 0, 0] = float("nan")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step + 1 and self.weights:
            with torch.no_grad():
                pl_module.model.class_embed[0, 0] = float("inf")


def _every_step(**extra: object) -> dict:
    return {"trainer.checkpoint_every_n_steps": 1, "trainer.max_epochs": 2, **extra}


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* at step 5 \(epoch 1, batch 1\)"):
        train(load_config(TINY, _every_step()), tmp_path, callbacks=[PoisonBatch(5)])
    saved = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 5  # the state before the bad step
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteError, match="refusing to write a checkpoint at step 4"):
        train(load_config(TINY, _every_step()), tmp_path, callbacks=[PoisonBatch(3, weights=True)])
    saved = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_nan_loss_skip_policy_drops_the_batch(tmp_path: Path) -> None:
    config = load_config(TINY, _every_step(**{"trainer.nan_policy": "skip"}))
    result = train(config, tmp_path, callbacks=[PoisonBatch(5)])
    assert result.skipped_batches == 1 and result.global_step == 8
    saved = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    from bicorseg.training.run import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "bad": _Unpicklable()}, path)
    assert _load(path)["global_step"] == 1  # the good file is untouched
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # and no partial file is left
