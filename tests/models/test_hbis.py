"""HBIS layer: closed-form CE2F against the explicit sum, and F2CE pixel selection."""

from __future__ import annotations

import pytest
import torch

from bicorseg.models import BiCoRSeg, HBISLayer, PixelSelection, pixel_weights
from tests.helpers.models import tiny_config
from tests.helpers.reference import ExplicitHBISLayer, classify_explicit, feature_update_explicit


def _random_layer(selection: PixelSelection, dtype: torch.dtype, inner_steps: int = 1) -> HBISLayer:
    layer = HBISLayer(32, selection, lambda_film=0.5, tau=0.7, inner_steps=inner_steps).to(dtype)
    with torch.no_grad():  # move every parameter away from its default initialisation
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return layer


@pytest.mark.parametrize("selection", [PixelSelection("topk", 0.1, 4), PixelSelection("topk", 1.0, 4)])
@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"), [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-5, 1e-5)]
)
def test_closed_form_ce2f_equals_explicit_sum(selection, dtype, rtol, atol) -> None:
    layer = _random_layer(selection, dtype, inner_steps=2)
    explicit = ExplicitHBISLayer(32, selection, 0.5, 0.7, 2).to(dtype)
    explicit.load_state_dict(layer.state_dict())
    class_emb = torch.randn(2, 5, 32, dtype=dtype)
    feats = torch.randn(2, 12, 10, 32, dtype=dtype)  # channels-last
    for fast, slow in zip(layer(class_emb, feats), explicit(class_emb, feats)):
        torch.testing.assert_close(fast, slow, rtol=rtol, atol=atol)
    # and the step on its own, from the same inputs
    _, scores = layer.scores(class_emb, feats)
    torch.testing.assert_close(
        layer.feature_update(feats, class_emb, scores),
        feature_update_explicit(layer, feats, class_emb, scores),
        rtol=rtol,
        atol=atol,
    )


def test_topk_keeps_k_strongest_pixels_and_normalises() -> None:
    heat = torch.rand(2, 3, 100, dtype=torch.float64)
    selection = PixelSelection("topk", ratio=0.05, min_pixels=8)  # round(5) < 8 -> k = 8
    weights = pixel_weights(heat, selection)
    assert ((weights > 0).sum(-1) == 8).all()
    top = heat.topk(8, dim=-1)
    expected = top.values / (top.values.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(weights.gather(-1, top.indices), expected)


def test_ratio_one_uses_every_pixel() -> None:
    heat = torch.rand(1, 2, 50, dtype=torch.float64)
    weights = pixel_weights(heat, PixelSelection("topk", 1.0, 64))
    torch.testing.assert_close(weights, heat / (heat.sum(-1, keepdim=True) + 1e-6))


def test_k_is_capped_by_the_number_of_pixels() -> None:
    assert PixelSelection("topk", 0.02, 64).num_pixels(40) == 40
    assert PixelSelection("topk", 0.02, 64).num_pixels(1600) == 64
    assert PixelSelection("topk", 0.02, 64).num_pixels(65536) == 1311


def test_threshold_mode_and_fallback_to_the_whole_map() -> None:
    heat = torch.tensor([[[0.1, 0.7, 0.95, 0.3], [0.2, 0.3, 0.4, 0.1]]], dtype=torch.float64)
    weights = pixel_weights(heat, PixelSelection("threshold", threshold=0.6))
    torch.testing.assert_close(
        weights[0, 0], torch.tensor([0, 0.7, 0.95, 0], dtype=torch.float64) / (1.65 + 1e-6)
    )
    # nothing reaches the threshold in the second map: the normalised sigmoid map is used instead
    torch.testing.assert_close(weights[0, 1], heat[0, 1] / (heat[0, 1].sum() + 1e-6))


def test_topk_fallback_when_selected_mass_vanishes() -> None:
    heat = torch.full((1, 1, 10), 1e-9, dtype=torch.float64)
    weights = pixel_weights(heat, PixelSelection("topk", 0.2, 1))
    torch.testing.assert_close(weights[0, 0], heat[0, 0] / (heat[0, 0].sum() + 1e-6))
    assert (weights > 0).all()


def test_percentile_mode_keeps_the_top_share() -> None:
    heat = torch.linspace(0.01, 0.99, 100, dtype=torch.float64).view(1, 1, 100)
    weights = pixel_weights(heat, PixelSelection("percentile", threshold=0.9))
    assert (weights > 0).sum() == 10


def test_pixel_weights_carry_no_gradient() -> None:
    scores = torch.randn(1, 2, 16, requires_grad=True)
    assert not pixel_weights(torch.sigmoid(scores), PixelSelection()).requires_grad


def test_fused_head_equals_the_upsampler_as_written() -> None:
    model = BiCoRSeg(tiny_config(width=64)).double()
    with torch.no_grad():
        model.upsampler[1].weight.normal_()
        model.upsampler[1].bias.normal_()
    kernels = torch.randn(2, 5, 4, dtype=torch.float64)
    feats = torch.randn(2, 64, 6, 7, dtype=torch.float64)
    fused = model._classify(kernels, feats.permute(0, 2, 3, 1))
    torch.testing.assert_close(fused, classify_explicit(model, kernels, feats), rtol=1e-12, atol=1e-12)
