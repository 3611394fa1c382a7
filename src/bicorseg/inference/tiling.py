"""The tile grid over a raster of any size and the smooth weights that blend overlapping tiles.

Tiles have the requested size wherever the raster allows it: the last tile of a row or column is
shifted back so that it ends on the raster's edge instead of being cut short (the model sees full
tiles, and batches keep one shape). A raster smaller than the tile is one tile of its own size.
Blending normalises by the accumulated weight, so any positive window gives a partition of unity;
the window is smooth (raised cosine) with a floor, so that weights never vanish and the edges of
the raster, covered by one tile only, keep a well-defined value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bicorseg.defaults import DEFAULT_OVERLAP
from bicorseg.errors import ConfigError

WINDOW_FLOOR = 0.05  # smallest weight, at a tile's border (relative to 1 at its centre)


def check_overlap(overlap: float) -> None:
    """Refuse an ``overlap`` (fraction of a tile shared with its neighbour) outside ``[0, 1)``."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"must be in [0, 1), got {overlap}", key="overlap")


@dataclass(frozen=True)
class Tile:
    """One tile in input pixels: rows ``y0:y0+height``, columns ``x0:x0+width``."""

    y0: int
    x0: int
    height: int
    width: int


def axis_starts(length: int, tile: int, stride: int, multiple: int = 1) -> list[tuple[int, int]]:
    """(start, size) of the tiles covering ``0..length`` along one axis.

    Starts are multiples of ``multiple`` (used when an output has a coarser resolution); the last
    tile ends at ``length`` (its start is rounded down to the multiple, so it may be up to
    ``multiple - 1`` pixels longer than ``tile``).
    """
    if length <= tile:
        return [(0, length)]
    starts = list(range(0, length - tile, stride))
    last = (length - tile) // multiple * multiple
    if last > starts[-1]:
        starts.append(last)
    # the final tile reaches the edge (exactly ``tile`` long unless its start was rounded down)
    return [(start, tile) for start in starts[:-1]] + [(starts[-1], length - starts[-1])]


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles covering a ``height x width`` raster.

    Args:
        height, width: raster size in pixels.
        tile: tile side in pixels (smaller rasters give one tile of their own size).
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        multiple: tile starts and the stride are multiples of this (the output scale factor).
    """

    height: int
    width: int
    tile: int
    overlap: float = DEFAULT_OVERLAP
    multiple: int = 1

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ConfigError(f"must be a positive number of pixels, got {self.tile}", key="tile")
        check_overlap(self.overlap)
        if self.tile < self.multiple:
            raise ConfigError(f"must be at least {self.multiple} pixels here, got {self.tile}", key="tile")
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"cannot tile an empty raster ({self.height} x {self.width})")

    @property
    def stride(self) -> int:
        m = self.multiple
        # rounded down to the multiple: a stride above the tile size would leave gaps
        return max(m, math.floor(self.tile * (1.0 - self.overlap) / m) * m)

    @property
    def rows(self) -> list[tuple[int, int]]:
        return axis_starts(self.height, self.tile, self.stride, self.multiple)

    @property
    def cols(self) -> list[tuple[int, int]]:
        return axis_starts(self.width, self.tile, self.stride, self.multiple)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[Tile]:
        for y0, h in self.rows:
            for x0, w in self.cols:
                yield Tile(y0, x0, h, w)


def window_1d(size: int) -> np.ndarray:
    """A raised-cosine window of ``size`` samples, 1 at the centre and :data:`WINDOW_FLOOR` at the borders."""
    if size == 1:
        return np.ones(1, np.float32)
    position = (np.arange(size, dtype=np.float64) + 0.5) / size  # pixel centres in (0, 1)
    hann = np.sin(math.pi * position) ** 2
    return (WINDOW_FLOOR + (1.0 - WINDOW_FLOOR) * hann).astype(np.float32)


@lru_cache(maxsize=16)
def blend_weights(height: int, width: int) -> np.ndarray:
    """The separable 2-D blending window of a ``height x width`` tile (read-only, cached)."""
    weights = np.outer(window_1d(height), window_1d(width))
    weights.setflags(write=False)
    return weights


def output_size(length: int, scale: int) -> int:
    """Size of an output at ``1/scale`` resolution (``ceil``: a partial last cell still counts)."""
    return -(-length // scale)
