"""Reference outputs of the original implementation (../shared/parity): neck, decoder and every loss."""

from __future__ import annotations

import pytest
import torch

from bicorseg.checkpoint import map_official_state_dict
from bicorseg.losses import BiCoRSegLoss, LossConfig
from bicorseg.models import BiCoRSeg, ModelConfig
from conftest import shared_path

CASES = ["loveda_like", "potsdam_like"]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=1e-10, atol=1e-10 * expected.abs().max()
    )


@pytest.fixture(scope="module", params=CASES)
def case(request):
    reference = torch.load(shared_path("parity", f"{request.param}.pt"), weights_only=False)
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
    stages = [s.double() for s in reference["stage_features"]]
    return model.double(), stages, reference


def test_neck(case) -> None:
    model, stages, reference = case
    size = reference["labels"].shape[-1] // 4
    _close(model.neck(stages, (size, size)), reference["f0"])


def test_training_outputs(case) -> None:
    model, stages, reference = case
    size = tuple(reference["labels"].shape[-2:])
    out = model.decode(stages, size, train=True)
    expected = reference["train"]
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


def test_every_loss_term(case) -> None:
    model, stages, reference = case
    cfg = reference["config"]
    weights = cfg["loss_weights"]
    loss = BiCoRSegLoss(
        LossConfig(
            ignore_index=cfg["ignore_index"],
            aux_weight=weights["aux"],
            heatmap_weight=weights["heatmap"],
            fisher_weight=weights["fisher"],
            final_fisher_weight=weights["fisher_final_extra"],
        )
    )
    out = model.decode(stages, tuple(reference["labels"].shape[-2:]), train=True)
    terms = loss(out, reference["labels"])
    assert set(terms) == set(reference["losses"])
    for key, expected in reference["losses"].items():
        assert terms[key].item() == pytest.approx(float(expected), rel=1e-10), key
