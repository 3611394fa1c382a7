"""In-memory sliding-window prediction: no seams, TTA, masks, and the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bicorseg.errors import ConfigError
from bicorseg.inference import predict_array
from bicorseg.models import BiCoRSeg
from tests.helpers.inference import direct_probabilities, pixel_model
from tests.helpers.models import tiny_config


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_per_pixel_model_tiled_equals_untiled(tta: str) -> None:
    """Blending leaves no seam: with a per-pixel model, tiled == untiled (argmax exact, p to 1e-5)."""
    model = pixel_model(3)
    image = np.random.default_rng(0).normal(size=(3, 150, 173)).astype(np.float32)
    tiled = predict_array(model, image, tile=64, overlap=0.25, batch_size=3, tta=tta)
    expected = direct_probabilities(model, image)
    assert tiled.shape == (4, 150, 173) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, expected, atol=1e-5, rtol=0)
    assert (tiled.argmax(0) == expected.argmax(0)).all()


def test_valid_mask_and_nan_pixels_give_zero_probabilities() -> None:
    model = pixel_model(2)
    image = np.random.default_rng(1).normal(size=(2, 80, 90)).astype(np.float32)
    image[1, 5, 7] = np.nan
    valid = np.ones((80, 90), bool)
    valid[40:, 50:] = False
    probs = predict_array(model, torch.from_numpy(image), tile=32, overlap=0.5, valid=valid)
    assert (probs[:, 40:, 50:] == 0).all() and (probs[:, 5, 7] == 0).all()
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs[:, :40].sum(0)[np.arange(40) != 5], 1.0, atol=1e-5)


def test_a_batch_size_below_one_is_refused() -> None:
    """Not silently taken as 1: the same refusal as ``PredictOptions``."""
    image = np.zeros((2, 40, 40), np.float32)
    with pytest.raises(ConfigError, match=r"^batch_size: must be at least 1, got 0$"):
        predict_array(pixel_model(2), image, tile=32, batch_size=0)


@pytest.mark.slow
def test_bicorseg_model_sliding_window() -> None:
    model = BiCoRSeg(tiny_config()).train()
    image = np.random.default_rng(2).normal(size=(3, 100, 130)).astype(np.float32)
    probs = predict_array(model, image, tile=64, overlap=0.25, batch_size=2, tta="lr")
    assert model.training  # the caller's mode is restored
    assert probs.shape == (4, 100, 130)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    whole = predict_array(model, image[:, :60, :60], tile=512)  # smaller than a tile: one pass
    expected = direct_probabilities(model.eval(), image[:, :60, :60])
    np.testing.assert_allclose(whole, expected, atol=1e-5)
