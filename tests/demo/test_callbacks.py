"""The demo's learning-rate schedule: linear warm-up, then a cosine down to the floor at the last step."""

from __future__ import annotations

import numpy as np
import pytest

from bicorseg.demo.callbacks import StepSchedule


def test_warm_up_then_cosine_to_the_floor() -> None:
    schedule = StepSchedule(lr=1e-2, min_lr=3e-5, steps=400, warmup=30)
    rates = np.array([schedule.rate(step) for step in range(400)])
    assert rates[0] == pytest.approx(1e-2 / 30, rel=1e-3)  # the first step is a thirtieth of the peak
    assert np.all(np.diff(rates[:30]) > 0)  # warm-up rises
    assert np.all(np.diff(rates[30:]) < 0)  # then it only falls
    assert rates.max() == pytest.approx(1e-2, rel=2e-2)  # the cosine starts with the warm-up
    assert rates[-1] == pytest.approx(3e-5, rel=0.05) and rates.min() >= 3e-5
    assert schedule.rate(1000) == pytest.approx(3e-5)  # past the end (a resumed or longer run): the floor
