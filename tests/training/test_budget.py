"""The run's budget: the per-step schedule, a time limit the schedule follows, a validation at the end."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from bicorseg.training.budget import RunBudget, scheduled_rate
from bicorseg.training.config import load_config
from tests.helpers.training import TINY, cli, column, read_metrics


def test_warm_up_then_cosine_to_the_floor() -> None:
    steps = 400
    rates = np.array([scheduled_rate((s + 1) / steps, s, 1e-2, 3e-5, warmup=30) for s in range(steps)])
    assert rates[0] == pytest.approx(1e-2 / 30, rel=1e-3)  # the first step is a thirtieth of the peak
    assert np.all(np.diff(rates[:30]) > 0)  # warm-up rises
    assert np.all(np.diff(rates[30:]) < 0)  # then it only falls
    assert rates.max() == pytest.approx(1e-2, rel=2e-2)  # the cosine starts with the warm-up
    assert rates[-1] == pytest.approx(3e-5) and rates.min() >= 3e-5  # the last step takes the floor
    assert scheduled_rate(2.5, 1000, 1e-2, 3e-5, warmup=30) == pytest.approx(3e-5)  # past the end
    assert scheduled_rate(0.5, 100, 1e-2, 3e-5, warmup=30, cosine=False) == 1e-2  # constant


@pytest.mark.parametrize(
    ("overrides", "per_step"),
    [
        ({}, False),  # epochs alone: the published per-epoch cosine
        ({"trainer.max_minutes": 5}, True),
        ({"trainer.max_steps": 10}, True),
        ({"optimizer.warmup_steps": 5}, True),
        ({"optimizer.schedule": "constant", "trainer.max_minutes": 5}, False),
    ],
)
def test_when_the_rate_is_set_per_step(overrides: dict, per_step: bool) -> None:
    assert load_config(TINY, overrides).schedule_per_step is per_step


def test_the_time_share_never_goes_back() -> None:
    # a slow step (an epoch's first, waiting for data) then a fast one: the estimate of the next
    # step's end falls, but the progress, and so the rate, must not go back
    budget = RunBudget(load_config(TINY, {"trainer.max_minutes": 1}))
    budget._step_seconds = 30.0
    slow = budget.progress(0)
    budget._step_seconds = 1.0
    assert slow == pytest.approx(0.5) and budget.progress(1) == slow
    assert budget.rate(1) <= budget.rate(0)


def test_max_minutes_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"trainer\.max_minutes: must be positive"):
        load_config(TINY, {"trainer.max_minutes": 0})


def _lr_and_report(run: Path) -> tuple[list[tuple[int, float]], dict]:
    return column(read_metrics(run), "train/lr"), json.loads((run / "val_metrics.json").read_text())


def test_max_steps_mid_period_anneals_to_the_floor_and_validates_the_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "100", "--trainer.max_steps", "6",
               "--trainer.check_val_every_n_epoch", "50", "--trainer.tensorboard", "false",
               "--output", run) == 0  # fmt: skip
    lrs, report = _lr_and_report(run)
    assert [step for step, _ in lrs] == list(range(6))
    rates = [lr for _, lr in lrs]
    assert rates == pytest.approx([scheduled_rate((s + 1) / 6, s, 1e-3, 1e-6, 0) for s in range(6)])
    assert rates[-1] == pytest.approx(1e-6)  # the last step at the floor
    # 6 steps end inside the first period of 50 epochs: validated all the same, at the last step
    assert report["convention"]["step"] == 6
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_the_last_epoch_is_validated_outside_the_validation_period(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch",
               "2", "--trainer.tensorboard", "false", "--output", run) == 0  # fmt: skip
    validated = [step for step, _ in column(read_metrics(run), "val/miou")]
    assert validated == [7, 11]  # epoch 2 (steps 0-7), then the end of epoch 3 (4 steps each)
    assert json.loads((run / "val_metrics.json").read_text())["convention"]["step"] == 12


@pytest.mark.slow
def test_time_budget_stops_in_time_with_the_rate_at_the_floor(tmp_path: Path) -> None:
    run = tmp_path / "run"
    budget = 4.0
    start = time.perf_counter()
    assert cli("train", "--config", TINY, "--trainer.max_epochs", "10000", "--trainer.max_minutes",
               str(budget / 60), "--trainer.check_val_every_n_epoch", "10000",
               "--trainer.tensorboard", "false", "--output", run) == 0  # fmt: skip
    elapsed = time.perf_counter() - start
    lrs, report = _lr_and_report(run)
    steps = len(lrs)
    assert 4 < steps < 40_000  # the time ended the run, not the epochs
    # the budget covers training; a last step, the final validation and start-up come on top
    assert elapsed < budget + 30
    rates = [lr for _, lr in lrs]
    assert all(b <= a for a, b in itertools.pairwise(rates))  # the cosine only falls (no warm-up)
    assert rates[0] > 0.5e-3  # it began near the peak ...
    assert rates[-1] <= 1e-6 + 0.02 * (1e-3 - 1e-6)  # ... and the last step is at the floor
    assert report["convention"]["step"] == steps  # the final model was validated
