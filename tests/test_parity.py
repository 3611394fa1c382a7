"""Reference outputs of the original implementation (../shared/parity): neck, decoder, every loss, gradients."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from bicorseg.checkpoint import map_official_state_dict
from bicorseg.losses import BiCoRSegLoss, LossConfig
from bicorseg.models import BiCoRSeg, ModelConfig
from tests.helpers.shared import shared_path

pytestmark = pytest.mark.shared  # real data and reference outputs from ../shared

# loveda_ratio builds a third ConvNeXt-B model: slow (the fast loop keeps the two original cases)
CASES = ["loveda_like", "potsdam_like", pytest.param("loveda_ratio", marks=pytest.mark.slow)]
WITH_F0 = ["loveda_like", "potsdam_like"]  # loveda_ratio is kept small: no f0, no training logits


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=1e-10, atol=1e-10 * expected.abs().max()
    )


@functools.cache
def _model(name: str) -> tuple[BiCoRSeg, list[torch.Tensor], dict]:
    """A float64 model with the reference's neck and decoder weights, its stage features, the reference
    (one per case for the whole module: tests leave it as they found it)."""
    reference = torch.load(shared_path("parity", f"{name}.pt"), weights_only=True)
    cfg = reference["config"]
    config = ModelConfig(
        num_classes=cfg["num_classes"],
        backbone="convnext_base",
        width=cfg["width"],
        layers=cfg["layers"],
        topk_ratio=cfg["topk_ratio"],
        min_pixels=cfg["min_pixels"],
        lambda_film=cfg["lambda_film"],
        tau=cfg["tau"],
        inner_steps=cfg["inner_steps"],
    )
    model = BiCoRSeg(config)
    mapped, unexpected = map_official_state_dict(reference["state_dict"])
    assert unexpected == []
    missing, extra = model.load_state_dict(mapped, strict=False)
    assert extra == [] and all(k.startswith("backbone.") for k in missing)
    model.backbone = nn.Identity()  # not in the fixtures (the tests feed its stage features)
    stages = [s.double() for s in reference["stage_features"]]
    return model.double(), stages, reference


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return _model(request.param)


def _loss(reference: dict) -> BiCoRSegLoss:
    cfg = reference["config"]
    weights = cfg["loss_weights"]
    return BiCoRSegLoss(
        LossConfig(
            ignore_index=cfg["ignore_index"],
            aux_weight=weights["aux"],
            heatmap_weight=weights["heatmap"],
            fisher_weight=weights["fisher"],
            final_fisher_weight=weights["fisher_final_extra"],
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_F0)
def test_neck(name: str) -> None:
    model, stages, reference = _model(name)
    size = reference["labels"].shape[-1] // 4
    _close(model.neck(stages, (size, size)), reference["f0"])


def test_training_outputs(case) -> None:
    model, stages, reference = case
    size = tuple(reference["labels"].shape[-2:])
    out = model.decode(stages, size, train=True)
    expected = reference["train"]
    assert {"heatmap_logits", "class_embeddings"} <= set(expected)
    if "logits" in expected:
        _close(out.logits, expected["logits"])
        _close(out.aux_logits, expected["aux_logits"])
    for ours, theirs in zip(out.heatmap_logits, expected["heatmap_logits"], strict=True):
        _close(ours, theirs)
    for ours, theirs in zip(out.class_embeddings, expected["class_embeddings"], strict=True):
        _close(ours, theirs)


def test_evaluation_logits(case) -> None:
    model, stages, reference = case
    out = model.decode(stages, tuple(reference["labels"].shape[-2:]), train=False)
    _close(out.logits, reference["eval_logits"])


class _StageFeatures(nn.Module):
    """Stands in for the backbone (not part of the fixtures): the reference stage features for an input
    of exactly the reference size, so ``model(x)`` runs the whole evaluation path of the network."""

    def __init__(self, stages: list[torch.Tensor], size: tuple[int, int]) -> None:
        super().__init__()
        self.stages, self.size = stages, size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert tuple(x.shape[-2:]) == self.size, "a multiple of 32 must reach the backbone unpadded"
        return self.stages


def test_model_forward_in_eval_mode_on_multiples_of_32(case) -> None:
    model, stages, reference = case
    size = tuple(reference["labels"].shape[-2:])
    assert size[0] % 32 == 0 and size[1] % 32 == 0
    backbone = model.backbone
    model.backbone = _StageFeatures(stages, size)
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(stages[0].shape[0], 3, *size, dtype=torch.float64))
    finally:
        model.backbone = backbone
    _close(logits, reference["eval_logits"])


def test_every_loss_term(case) -> None:
    model, stages, reference = case
    out = model.decode(stages, tuple(reference["labels"].shape[-2:]), train=True)
    terms = _loss(reference)(out, reference["labels"])
    assert set(terms) == set(reference["losses"])
    for key, expected in reference["losses"].items():
        assert terms[key].item() == pytest.approx(float(expected), rel=1e-10), key


@pytest.mark.slow
def test_ratio_case_selects_above_the_min_pixels_floor() -> None:
    model, _, reference = _model("loveda_ratio")
    side = reference["labels"].shape[-1] // 4
    cfg = reference["config"]
    assert (cfg["topk_ratio"], cfg["min_pixels"]) == (0.02, 64)
    assert [layer.selection.num_pixels(side * side) for layer in model.layers] == [82, 82]  # of 4096


@pytest.mark.slow
def test_gradients_of_the_total_loss() -> None:
    # The original treats the F2CE selection weights as constants; so does bicorseg (pixel_weights runs
    # without gradient): every neck and decoder gradient then agrees.
    model, stages, reference = _model("loveda_ratio")
    model.zero_grad(set_to_none=True)
    out = model.decode(stages, tuple(reference["labels"].shape[-2:]), train=True)
    total = _loss(reference)(out, reference["labels"])["total"]
    assert total.item() == pytest.approx(float(reference["losses"]["total"]), rel=1e-10)
    total.backward()
    expected, unexpected = map_official_state_dict(reference["grads"])
    assert unexpected == []
    ours = {name: p.grad for name, p in model.named_parameters()}
    assert set(ours) == set(expected)  # every neck and decoder parameter
    for name, grad in ours.items():
        assert grad is not None, name
        reference_grad = expected[name].to(torch.float64)
        torch.testing.assert_close(
            grad, reference_grad, rtol=1e-10, atol=1e-12 * max(float(reference_grad.abs().max()), 1e-300)
        )
