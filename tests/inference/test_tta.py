"""Test-time augmentation: transforms invert exactly, and averaging keeps equivariant models unchanged."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import pixel_model

from bicorseg.errors import ConfigError
from bicorseg.inference.tta import tta_transforms, with_tta


@pytest.mark.parametrize("mode, count", [("none", 1), ("lr", 3), ("d4", 8)])
def test_transforms_invert_and_are_distinct(mode: str, count: int) -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    transforms = tta_transforms(mode)
    assert len(transforms) == count
    images = set()
    for forward, inverse in transforms:
        y = forward(x)
        assert torch.equal(inverse(y), x)
        images.add(tuple(y.flatten().tolist()) + tuple(y.shape))
    assert len(images) == count


@pytest.mark.parametrize("mode", ["none", "lr", "d4"])
def test_per_pixel_model_is_unchanged_by_tta(mode: str) -> None:
    model = pixel_model(3)
    x = torch.randn(2, 3, 20, 30)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
        got = with_tta(model, mode)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_tta_averages_probabilities_of_the_passes() -> None:
    def position_model(x: torch.Tensor) -> torch.Tensor:  # not flip-equivariant: depends on the column
        cols = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([cols, -cols], 1) * 0.1

    x = torch.zeros(1, 1, 4, 6)
    p = with_tta(position_model, "lr")(x)
    plain = torch.softmax(position_model(x), 1)
    flipped = torch.softmax(position_model(x), 1).flip(-1)
    torch.testing.assert_close(p, (2 * plain + flipped) / 3)
    torch.testing.assert_close(p.sum(1), torch.ones(1, 4, 6))


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--tta"):
        with_tta(pixel_model(3), "d8")
