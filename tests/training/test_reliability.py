"""Reliability: resuming after a killed run, NaN/Inf losses (stop or skip), never a bad checkpoint file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch

from bicorseg.atomic import find_temps
from bicorseg.training.config import load_config
from bicorseg.training.module import NonFiniteError
from bicorseg.training.run import StopSignals, TrainingInterrupted, train
from tests.helpers.training import REPO, TINY

# 16 steps per epoch, a checkpoint after every step
LONG = {"data.synthetic_size": [64, 64, 8], "trainer.checkpoint_every_n_steps": 1, "trainer.max_epochs": 50}


class Recorder(L.Callback):
    """Where a run starts (epoch, step, first batch index) and how it ends."""

    def __init__(self) -> None:
        self.start: tuple[int, int] | None = None
        self.first_batch: int | None = None
        self.first_step: tuple[int, int, int] | None = None  # epoch, batch index, global step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = (trainer.current_epoch, trainer.global_step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.first_batch is None:
            self.first_batch = batch_idx
            self.first_step = (trainer.current_epoch, batch_idx, trainer.global_step)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _step_of(path: Path) -> int:
    try:
        return int(_load(path)["global_step"])
    except Exception:  # being replaced right now: try again
        return -1


@pytest.mark.slow
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
    assert find_temps(run / "checkpoints") == []  # temporary files of the killed run are gone


def _start_training(run: Path, *args: str, group: bool = False) -> subprocess.Popen:
    """``bicorseg train`` (tiny config) as a real process; SIGINT is not inherited as ignored.

    ``group``: in a process group of its own, as a terminal's foreground job (Ctrl-C reaches all of it).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "bicorseg.cli.main", "train", "--config", TINY, "--output", str(run), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=group,
    )  # fmt: skip


def _wait_for(process: subprocess.Popen, ready, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"the run did not reach {what} in time"
        time.sleep(0.05)


def _epoch_saved(path: Path, epoch: int) -> bool:
    try:
        return _load(path)["epoch"] >= epoch
    except Exception:  # absent, or being replaced right now
        return False


LONG_EPOCHS = [f"--{k}={v}" for k, v in LONG.items() if k != "trainer.checkpoint_every_n_steps"]


class EpochEnds(L.Callback):
    """The step stored in ``last.ckpt`` when each epoch (after the first) starts."""

    def __init__(self, path: Path) -> None:
        self.path, self.steps = path, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.steps.append(_load(self.path)["global_step"] if self.path.is_file() else None)


@pytest.mark.parametrize(
    "monitor",
    [
        {"data.val_split": None},  # no validation, so no monitored value at all
        {"optimizer.lr": 1e-12, "optimizer.min_lr": 0},  # validated; the score cannot improve
    ],
    ids=["absent", "not-improving"],
)
@pytest.mark.slow
def test_last_checkpoint_is_written_at_every_epoch_end(tmp_path: Path, monitor: dict, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a run folder given as a relative path
    recorder = EpochEnds(tmp_path / "run" / "checkpoints" / "last.ckpt")
    result = train(load_config(TINY, {"trainer.max_epochs": 3, **monitor}), "run", callbacks=[recorder])
    assert recorder.steps == [4, 8]  # 4 steps per epoch
    assert result.last_checkpoint == Path("run/checkpoints/last.ckpt")
    assert _load(result.last_checkpoint)["global_step"] == 12
    if "optimizer.lr" in monitor:  # the scenario is what it claims: the best checkpoint stayed at epoch 0
        assert result.best_checkpoint == Path("run/checkpoints/best.ckpt")  # named as the run folder is
        assert _load(result.best_checkpoint)["global_step"] == 4


@pytest.mark.slow
def test_kill_9_then_resume_continues_from_the_last_finished_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = _start_training(run, *LONG_EPOCHS)  # default checkpointing: last.ckpt per epoch only
    last = run / "checkpoints" / "last.ckpt"
    try:
        _wait_for(process, lambda: _epoch_saved(last, 1), "the end of epoch 1")
        time.sleep(0.5)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = _load(last)
    assert saved["global_step"] % 16 == 0 and saved["global_step"] >= 32  # an epoch's end
    finished_epochs = saved["global_step"] // 16

    recorder = Recorder()
    config = load_config(TINY, {**LONG, "trainer.checkpoint_every_n_steps": None,
                                "trainer.max_steps": saved["global_step"] + 3})  # fmt: skip
    result = train(config, run, resume="auto", callbacks=[recorder])
    assert recorder.start[1] == saved["global_step"]
    assert recorder.first_step == (finished_epochs, 0, saved["global_step"])  # the next epoch, from its start
    assert result.global_step == saved["global_step"] + 3


class SignalAt(L.Callback):
    """Sends ``signum`` to this very process when the batch ``batch_idx`` of ``epoch`` starts."""

    def __init__(self, signum: int, epoch: int, batch_idx: int) -> None:
        self.signum, self.epoch, self.batch_idx = signum, epoch, batch_idx

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch_idx):
            os.kill(os.getpid(), self.signum)


class SignalAtSetup(L.Callback):
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def sigint_handled() -> Iterator[None]:
    """SIGINT handled as Python does by default, however this pytest was started: a shell starts a
    background job with SIGINT ignored, and a run keeps a signal that its parent ignored ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("sigint_handled")
def test_a_stop_signal_before_training_ends_the_run_at_once(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted) as stop:
        train(load_config(TINY, {"trainer.max_epochs": 5}), tmp_path, callbacks=[SignalAtSetup()])
    assert stop.value.exit_status == 130 and stop.value.checkpoint is None
    assert str(stop.value) == "interrupted by SIGINT before training started; no checkpoint was written"
    assert not (tmp_path / "checkpoints").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_laying_out_the_run_folder_is_not_cut_by_a_signal() -> None:
    signals, finished = StopSignals(), []
    with signals.installed(), pytest.raises(TrainingInterrupted):
        with signals.held():
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append(True)  # the block runs to its end, then the run stops
    assert finished == [True]


@pytest.mark.parametrize(
    ("batch_idx", "saved_step"),
    [(1, 6), (3, 8)],  # mid-epoch: right after that step; in the last batch: at the epoch's end
    ids=["mid-epoch", "last-batch"],
)
@pytest.mark.slow
def test_a_stop_signal_is_acted_on_at_the_next_step_boundary(
    tmp_path: Path, batch_idx: int, saved_step: int
) -> None:
    config = load_config(TINY, {"trainer.max_epochs": 5})
    with pytest.raises(TrainingInterrupted) as stop:
        train(config, tmp_path, callbacks=[SignalAt(signal.SIGTERM, 1, batch_idx)])
    assert (stop.value.step, stop.value.exit_status) == (saved_step, 143)
    assert str(stop.value).startswith(
        f"interrupted by SIGTERM at epoch 2, step {saved_step}; saved "
    )  # from 1
    saved = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (1, saved_step)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back
    if saved_step == 8:  # the epoch's validation ran before the stop
        assert json.loads((tmp_path / "val_metrics.json").read_text())["convention"]["epoch"] == 1

    recorder = Recorder()
    config = load_config(TINY, {"trainer.max_epochs": 5, "trainer.max_steps": saved_step + 1})
    result = train(config, tmp_path, resume="auto", callbacks=[recorder])
    assert recorder.start[1] == saved_step
    assert recorder.first_step == (saved_step // 4, saved_step % 4, saved_step)  # the next batch
    assert result.global_step == saved_step + 1


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_a_consistent_checkpoint_and_exits(
    tmp_path: Path, signum: int, status: int
) -> None:
    run = tmp_path / "run"
    process = _start_training(run, *LONG_EPOCHS)
    last = run / "checkpoints" / "last.ckpt"
    try:
        _wait_for(process, lambda: _epoch_saved(last, 0), "the end of epoch 0")
        time.sleep(0.3)  # into the next epoch
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == status, stderr[-2000:]
    ours = [line for line in stderr.splitlines() if line.startswith("bicorseg")]
    assert len(ours) == 1, stderr
    match = re.fullmatch(
        rf"bicorseg train: interrupted by {signal.Signals(signum).name} at epoch (\d+), step (\d+); "
        rf"saved {re.escape(str(run / 'checkpoints' / 'last.ckpt'))} \(continue with --resume\)",
        ours[0],
    )
    assert match, ours[0]
    epoch, step = map(int, match.groups())
    saved = _load(last)
    assert (saved["epoch"] + 1, saved["global_step"]) == (epoch, step)  # the message counts epochs from 1
    assert step > 16 and find_temps(run / "checkpoints") == []

    recorder = Recorder()
    config = load_config(
        TINY, {**LONG, "trainer.checkpoint_every_n_steps": None, "trainer.max_steps": step + 4}
    )
    result = train(config, run, resume="auto", callbacks=[recorder])
    assert recorder.start[1] == step
    assert recorder.first_step == (step // 16, step % 16, step)  # continues with the next batch
    assert result.global_step == step + 4


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_reaches_the_dataloader_workers_and_only_the_run_saves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = _start_training(run, *LONG_EPOCHS, "--data.num_workers=2", group=True)
    last = run / "checkpoints" / "last.ckpt"
    try:
        _wait_for(process, lambda: _epoch_saved(last, 0), "the end of epoch 0")
        time.sleep(0.3)  # into the next epoch
        members = subprocess.run(
            ["pgrep", "-g", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(members) >= 3, members  # the run and its (persistent) DataLoader workers
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "exited unexpectedly" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("bicorseg")]
    assert len(ours) == 1 and ours[0].startswith("bicorseg train: interrupted by SIGINT at epoch "), stderr
    step = int(re.search(r"step (\d+);", ours[0]).group(1))
    assert _load(last)["global_step"] == step > 16 and find_temps(run / "checkpoints") == []


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


@pytest.mark.slow
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
