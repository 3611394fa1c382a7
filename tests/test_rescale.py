"""The rescale of inputs that are not 8-bit: the option's forms and the map each mode resolves to."""

from __future__ import annotations

import numpy as np
import pytest

from bicorseg.errors import ConfigError
from bicorseg.rescale import (
    SAMPLE_SIDE,
    SAMPLE_WINDOWS,
    Rescale,
    check_checkpoint_units,
    check_rescale,
    resolve_rescale,
    sample_windows,
)


def test_the_option_has_one_written_form() -> None:
    assert check_rescale("Auto") == "auto" and check_rescale("none") == "none"
    assert check_rescale(" 0, 4095 ") == "0,4095" and check_rescale("0.0,1.0") == "0,1"
    with pytest.raises(ConfigError, match=r"^rescale: must be one of none, auto, percentile or MIN,MAX"):
        check_rescale("bogus")
    with pytest.raises(ConfigError, match=r"^rescale: MIN must be below MAX, got '10,5'"):
        check_rescale("10,5")
    with pytest.raises(ConfigError, match="must be one of"):
        check_rescale("0,inf")


def test_auto_reads_the_bit_depth_from_the_type_and_the_values() -> None:
    rng = np.random.default_rng(0)
    twelve = rng.integers(0, 4001, (3, 5000)).astype(np.float32)  # 12-bit data in a 16-bit container
    found = resolve_rescale("auto", 3, "uint16", twelve)
    assert found is not None and found.low == (0.0,) * 3 and found.high == (4095.0,) * 3
    assert found.how == "12-bit values"
    declared = resolve_rescale("auto", 3, "uint16", twelve / 4, nbits=12)  # the raster's NBITS wins
    assert declared is not None and declared.high == (4095.0,) * 3
    sixteen = resolve_rescale("auto", 3, "uint16", np.full((3, 10), 65535.0, np.float32))
    assert sixteen is not None and sixteen.high == (65535.0,) * 3
    unit = resolve_rescale("auto", 3, "float32", rng.random((3, 100), np.float32))
    assert unit is not None and unit.high == (1.0,) * 3 and unit.how == "floating-point values in 0..1"
    assert resolve_rescale("auto", 3, "uint8") is None  # 8-bit data: nothing to do, nothing sampled
    assert resolve_rescale("auto", 3, "uint16", np.full((3, 10), 200.0, np.float32)) is None  # 8-bit values
    assert resolve_rescale("none", 3, "uint16", twelve) is None
    assert resolve_rescale("auto", 3, "uint16", np.zeros((3, 0), np.float32)) is None  # all nodata


def test_negative_values_take_the_percentiles_and_a_range_is_taken_as_given() -> None:
    values = np.stack([np.arange(-500.0, 500.0), np.arange(0.0, 1000.0), np.full(1000, 7.0)])
    found = resolve_rescale("auto", 3, "int16", values)
    assert found is not None and found.how == "percentiles 2 and 98 of 1,000 sampled pixels"
    assert found.low[0] == pytest.approx(np.percentile(values[0], 2)) and found.high[1] == pytest.approx(
        np.percentile(values[1], 98)
    )
    assert found.low[2] == 7.0 and found.high[2] == 8.0  # a constant band: one unit wide
    given = resolve_rescale("100,1100", 2, "uint16")
    assert given == Rescale((100.0, 100.0), (1100.0, 1100.0), "the given range")


def test_the_map_is_linear_clipped_and_inverted_for_the_plausible_range() -> None:
    rescale = Rescale((0.0, 100.0), (4095.0, 1100.0), "test")
    data = np.array([[[0.0, 4095.0, 5000.0]], [[100.0, 600.0, 0.0]]], np.float32)
    assert rescale.apply(data.copy()).tolist() == [[[0.0, 255.0, 255.0]], [[0.0, 127.5, 0.0]]]
    assert rescale.input_values((255.0, -255.0)) == (4095.0, -900.0)
    assert "test: band ranges 0..4095, 100..1100 mapped to 0..255" == rescale.describe()
    assert Rescale.from_dict(rescale.to_dict()) == rescale
    with pytest.raises(ConfigError, match="increasing"):
        Rescale((5.0,), (5.0,), "empty")


def test_the_sample_is_a_bounded_grid_over_the_whole_raster() -> None:
    windows = sample_windows(20_000, 30_000)
    assert len(windows) == SAMPLE_WINDOWS and all(h == w == SAMPLE_SIDE for _, _, h, w in windows)
    rows, cols = sorted({y for y, *_ in windows}), sorted({x for _, x, *_ in windows})
    assert rows[0] < 20_000 / 8 and rows[-1] > 20_000 * 7 / 8 - SAMPLE_SIDE  # from top to bottom
    assert cols[0] < 30_000 / 8 and cols[-1] > 30_000 * 7 / 8 - SAMPLE_SIDE
    assert sample_windows(50, 70) == [(0, 0, 50, 70)]  # a small raster: once, whole


def test_only_a_checkpoint_in_8bit_units_takes_a_rescale() -> None:
    check_checkpoint_units("auto", (123.7, 116.3, 103.5), "ckpt")
    check_checkpoint_units("none", (1200.0,), "ckpt")
    with pytest.raises(ConfigError, match=r"^rescale: auto: the checkpoint ckpt normalises in other units"):
        check_checkpoint_units("auto", (1200.0, 900.0), "ckpt")
