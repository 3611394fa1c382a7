"""Property tests: for any raster size, tile size and overlap, blending is exact for a per-pixel model.

A per-pixel model's output at a pixel does not depend on its neighbours, so whatever the tiling,
blended probabilities must equal the untiled ones: every pixel is covered and the blend weights of
the tiles that cover it sum to one.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bicorseg.inference import predict_array
from bicorseg.inference.tiling import TileGrid
from tests.helpers.inference import direct_probabilities, pixel_model


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 140),
    width=st.integers(1, 140),
    tile=st.sampled_from([32, 48, 64, 96]),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
)
def test_tiling_covers_every_pixel(height: int, width: int, tile: int, overlap: float) -> None:
    grid = TileGrid(height, width, tile, overlap)
    covered = np.zeros((height, width), np.int32)
    for t in grid:
        assert t.y0 >= 0 and t.x0 >= 0 and t.y0 + t.height <= height and t.x0 + t.width <= width
        covered[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width] += 1
    assert covered.min() >= 1


@settings(max_examples=15, deadline=None)
@given(
    height=st.integers(8, 120),
    width=st.integers(8, 120),
    tile=st.sampled_from([32, 64]),
    overlap=st.sampled_from([0.0, 0.25, 0.5]),
    seed=st.integers(0, 1000),
)
def test_per_pixel_model_is_independent_of_the_tiling(height, width, tile, overlap, seed) -> None:
    model = pixel_model(3, seed=seed % 7)
    image = np.random.default_rng(seed).normal(size=(3, height, width)).astype(np.float32)
    expected = direct_probabilities(model, image)
    with torch.no_grad():
        tiled = predict_array(model, image, tile=tile, overlap=overlap, batch_size=2)
    np.testing.assert_allclose(tiled, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)  # blend weights sum to one
