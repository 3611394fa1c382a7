"""Tile grids cover every pixel with full-size tiles; blending weights are smooth and positive."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bicorseg.errors import ConfigError
from bicorseg.inference.engine import SlidingWindow
from bicorseg.inference.tiling import WINDOW_FLOOR, TileGrid, axis_starts, blend_weights, window_1d


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 2000),
    tile=st.integers(8, 600),
    overlap=st.floats(0.0, 0.9),
    multiple=st.sampled_from([1, 4]),
)
def test_axis_covers_every_pixel_with_full_tiles(
    length: int, tile: int, overlap: float, multiple: int
) -> None:
    grid = TileGrid(length, length, tile, overlap, multiple)
    tiles = axis_starts(length, tile, grid.stride, multiple)
    covered = np.zeros(length, bool)
    for start, size in tiles:
        assert start % multiple == 0
        assert start + size <= length
        assert size == min(tile, length) or (tiles[-1] == (start, size) and tile <= size < tile + multiple)
        covered[start : start + size] = True
    assert covered.all()
    assert tiles[-1][0] + tiles[-1][1] == length
    assert [s for s, _ in tiles] == sorted({s for s, _ in tiles})


def test_grid_that_does_not_divide_the_raster() -> None:
    grid = TileGrid(300, 260, 128, 0.25)
    assert grid.stride == 96
    assert grid.rows == [(0, 128), (96, 128), (172, 128)]
    assert grid.cols == [(0, 128), (96, 128), (132, 128)]
    assert len(grid) == 9 and len(list(grid)) == 9


def test_small_raster_is_one_tile_of_its_own_size() -> None:
    tiles = list(TileGrid(40, 70, 512))
    assert len(tiles) == 1
    tile = tiles[0]
    assert (tile.y0, tile.x0, tile.height, tile.width) == (0, 0, 40, 70)


def test_bad_grid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        TileGrid(100, 100, 64, 1.0)
    with pytest.raises(ConfigError, match="tile"):
        TileGrid(100, 100, 0)


def test_blend_weights_are_smooth_positive_and_symmetric() -> None:
    w = blend_weights(64, 48)
    assert w.shape == (64, 48)
    assert w.min() >= WINDOW_FLOOR**2 - 1e-7 and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-7)
    line = window_1d(64)
    assert np.abs(np.diff(line)).max() < 0.06  # no jumps: smooth transitions between tiles
    assert line[0] == pytest.approx(line[-1]) and line[0] < 0.1


@pytest.mark.parametrize("block", [64, 100, 4096])
@pytest.mark.parametrize("scale", [1, 4])
def test_engine_result_does_not_depend_on_blocks(block: int, scale: int) -> None:
    """A per-pixel function gives the same output, whatever the block size; each pixel is written once."""
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 150, 230)).astype(np.float32)
    valid = np.ones((150, 230), bool)
    valid[:20, :30] = False

    def fn(x: torch.Tensor) -> torch.Tensor:  # per-cell average at 1/scale, 2 channels
        pooled = torch.nn.functional.avg_pool2d(x, scale, ceil_mode=True) if scale > 1 else x
        return torch.stack([pooled[:, 0] * 2, pooled[:, 1] - 1], 1)

    engine = SlidingWindow(150, 230, 2, tile=64, overlap=0.3, batch_size=3, scale=scale, block=block)
    out = np.full((2, engine.out_height, engine.out_width), np.nan, np.float32)
    mask = np.zeros((engine.out_height, engine.out_width), bool)

    def read(y, x, h, w):
        return image[:, y : y + h, x : x + w], valid[y : y + h, x : x + w]

    def write(y, x, values, ok):
        assert np.isnan(out[:, y : y + values.shape[1], x : x + values.shape[2]]).all()  # each pixel once
        out[:, y : y + values.shape[1], x : x + values.shape[2]] = values
        mask[y : y + ok.shape[0], x : x + ok.shape[1]] = ok

    counted = []
    engine.run(fn, read, write, counted.append)
    assert sum(counted) == engine.total_tiles
    assert not np.isnan(out).any()
    expected = fn(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    if scale == 1:
        assert (mask == valid).all()


def test_blocks_cover_the_output_once_and_share_few_tiles() -> None:
    """Blocks tile the output exactly; each needs only the tiles over it, and the tiles shared by
    neighbouring blocks are a small share of the work (planning only: a 200000 x 150000 raster)."""
    engine = SlidingWindow(200_000, 150_000, 6, tile=512, overlap=0.25, block=8192)
    rows = sorted({(b.y0, b.height) for b in engine.blocks})
    cols = sorted({(b.x0, b.width) for b in engine.blocks})
    for spans, length in ((rows, 200_000), (cols, 150_000)):
        assert spans[0][0] == 0 and sum(n for _, n in spans) == length
        assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans))
    block = engine.blocks[len(engine.blocks) // 2]
    tile_rows, tile_cols = engine.tiles_of(block)
    # the accumulator spans the block plus at most a tile on each side: bounded by the block size
    assert tile_cols[-1][0] + tile_cols[-1][1] - tile_cols[0][0] <= 8192 + 2 * 512
    assert all(y0 < block.y0 + block.height and y0 + h > block.y0 for y0, h in tile_rows)
    # about 4/3 tiles cover each block edge (tile 512, stride 384): 2 x 4/3 x 384 / 8192 = 12.5 % at
    # most, less on average
    assert 0 < engine.overhead() < 0.11


def test_small_blocks_repeat_more_tiles() -> None:
    small = SlidingWindow(12288, 12288, 6, tile=512, overlap=0.25, block=2048)
    large = SlidingWindow(12288, 12288, 6, tile=512, overlap=0.25, block=4096)
    assert small.overhead() > large.overhead() > 0
    assert len(small.grid) == len(large.grid) == 32 * 32
