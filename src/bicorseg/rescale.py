"""Rescaling inputs whose values are not in the units the checkpoint was trained on (8-bit for the
published recipes).

A rescale maps each band's values linearly onto 0..255 before the normalisation, values beyond the
range clipped; the modes (:data:`RESCALE_MODES`, or ``MIN,MAX``), the sample the statistics of
``auto`` and ``percentile`` come from (:func:`sample_windows`), and why only a checkpoint in 8-bit
units takes one are in ``docs/prediction.md`` (Inputs that are not 8-bit).
:mod:`bicorseg.inference.raster_io` resolves the map (:func:`resolve_rescale`) once per raster when
it is inspected; it travels with the input's plan and each output records it
(:meth:`Rescale.describe`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bicorseg.defaults import RESCALE_MODES
from bicorseg.errors import ConfigError

TARGET_MAX = 255.0  # the values are mapped onto 0..255: the units of an 8-bit checkpoint
BIT_DEPTHS = (8, 10, 11, 12, 14, 16)  # sensors' bit depths, smallest first
PERCENTILES = (2.0, 98.0)
UNIT_TOLERANCE = 1e-5  # values in 0..1 that went through float32 arithmetic may exceed 1 by this much
SAMPLE_WINDOWS = 64  # at most this many windows (an 8 x 8 grid) ...
SAMPLE_SIDE = 128  # ... of this many pixels a side


def check_rescale(value: str) -> str:
    """The rescale option in its one written form: a mode, or ``"MIN,MAX"`` with MIN < MAX."""
    text = value.strip().lower()
    if text in RESCALE_MODES:
        return text
    try:
        low, high = map(float, text.split(","))
    except ValueError:  # not two numbers
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(
            f"must be one of {', '.join(RESCALE_MODES)} or MIN,MAX (e.g. 0,4095), got {value!r}",
            key="rescale",
        )
    if low >= high:
        raise ConfigError(f"MIN must be below MAX, got {value!r}", key="rescale")
    return f"{low:g},{high:g}"


def needs_sample(mode: str, dtype: str | None) -> bool:
    """Whether ``mode`` needs statistics of the data (8-bit data in ``auto`` needs none; ``dtype``
    None: the data type is unknown, the values decide)."""
    if mode == "percentile":
        return True
    return mode == "auto" and (dtype is None or np.dtype(dtype).itemsize > 1)


def sample_windows(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, h, w)`` of the windows sampled for statistics: centred in the cells of a grid of at
    most ``sqrt(SAMPLE_WINDOWS)`` cells a side over the raster (each window once)."""
    cells = math.isqrt(SAMPLE_WINDOWS)
    h, w = min(SAMPLE_SIDE, height), min(SAMPLE_SIDE, width)

    def starts(length: int, side: int) -> list[int]:
        centres = ((2 * i + 1) * length // (2 * cells) for i in range(cells))
        return sorted({min(max(0, centre - side // 2), length - side) for centre in centres})

    return [(y, x, h, w) for y in starts(height, h) for x in starts(width, w)]


@dataclass(frozen=True)
class Rescale:
    """A linear map of each band: ``low`` -> 0, ``high`` -> 255, clipped.

    Attributes:
        low, high: per band, in the input's units.
        how: where the range comes from, in words (``"12-bit values"``, ``"percentiles 2 and 98 of
            65,536 sampled pixels"``, ``"the given range"``).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    how: str

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not all(h > lo for lo, h in zip(self.low, self.high)):
            raise ConfigError(
                f"each band's range must be increasing, got {self.low} .. {self.high}", key="rescale"
            )

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``bands x H x W`` float32 input values -> 0..255, in place."""
        low = np.asarray(self.low, np.float32)[:, None, None]
        scale = (TARGET_MAX / (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64))).astype(
            np.float32
        )[:, None, None]
        data -= low
        data *= scale
        return np.clip(data, 0.0, TARGET_MAX, out=data)

    def input_values(self, rescaled: Sequence[float]) -> tuple[float, ...]:
        """The input values (per band) that map to ``rescaled`` (in 0..255 units), without clipping."""
        return tuple(lo + v * (h - lo) / TARGET_MAX for lo, h, v in zip(self.low, self.high, rescaled))

    def describe(self) -> str:
        """One line for an output's tags and a report: where the range comes from and each band's."""
        ranges = ", ".join(f"{lo:.6g}..{h:.6g}" for lo, h in zip(self.low, self.high))
        return f"{self.how}: band ranges {ranges} mapped to 0..{TARGET_MAX:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"low": list(self.low), "high": list(self.high), "how": self.how}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rescale:
        return cls(
            tuple(float(v) for v in data["low"]), tuple(float(v) for v in data["high"]), str(data["how"])
        )


def describe(rescale: Rescale | None) -> str:
    """The ``bicorseg_rescale`` tag of an output: the map, or ``none``."""
    return "none: values used as they are" if rescale is None else rescale.describe()


def check_checkpoint_units(mode: str, mean: Sequence[float], source: str) -> None:
    """Refuse a rescale for a checkpoint whose normalisation is not in 8-bit units (``docs/prediction.md``)."""
    if mode != "none" and max(mean) > TARGET_MAX:
        raise ConfigError(
            f"{mode}: the checkpoint {source} normalises in other units than 8-bit (mean up to "
            f"{max(mean):.4g}), so the range of its training data is unknown; give inputs in those units "
            "(rescale none)",
            key="rescale",
        )


def resolve_rescale(
    mode: str, bands: int, dtype: str | None, sample: np.ndarray | None = None, nbits: int | None = None
) -> Rescale | None:
    """The map of one raster (None: its values are used as they are).

    Args:
        mode: a checked option (:func:`check_rescale`).
        bands: the number of bands fed to the model.
        dtype: the raster's data type; None when unknown (images already in floating point): the
            values decide.
        sample: ``bands x n`` valid values of the raster (nodata left out), when :func:`needs_sample`.
        nbits: the bit depth the raster declares (GDAL's ``NBITS``), if any.
    """
    if mode == "none":
        return None
    if mode not in RESCALE_MODES:
        low, high = (float(v) for v in mode.split(","))
        return Rescale((low,) * bands, (high,) * bands, "the given range")
    if not needs_sample(mode, dtype):
        return None  # auto on 8-bit data
    if sample is None or sample.size == 0:
        return None  # nothing valid to measure: every pixel is nodata
    values = np.asarray(sample, np.float64)
    if mode == "auto":
        smallest, largest = float(values.min()), float(values.max())
        if (dtype is None or np.dtype(dtype).kind == "f") and largest <= 1.0 + UNIT_TOLERANCE:
            return Rescale((0.0,) * bands, (1.0,) * bands, "floating-point values in 0..1")
        # integer values, measured to the nearest (values that went through float32 arithmetic
        # may lie a little beyond them)
        unsigned = smallest > -0.5
        bits = nbits if nbits is not None and nbits > 1 else None
        if bits is None and unsigned:
            bits = next((b for b in BIT_DEPTHS if math.floor(largest + 0.5) <= 2**b - 1), None)
        if bits is not None and unsigned:
            if bits <= 8:
                return None  # values already in 0..255
            return Rescale((0.0,) * bands, (float(2**bits - 1),) * bands, f"{bits}-bit values")
        mode = "percentile"  # negative values, or wider than 16 bits: the data's own range
    low, high = np.percentile(values, PERCENTILES, axis=1)
    high = np.where(high > low, high, low + 1.0)  # a constant band: one unit wide
    count = values.shape[1]
    return Rescale(
        tuple(float(v) for v in low),
        tuple(float(v) for v in high),
        f"percentiles {PERCENTILES[0]:g} and {PERCENTILES[1]:g} of {count:,} sampled pixels",
    )
