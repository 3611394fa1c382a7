"""The reference model (explicit neck, CE2F, head; torchvision's blocks) gives the model's numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.convnext import CNBlock

from bicorseg.models import BiCoRSeg
from tests.helpers.models import tiny_config
from tests.helpers.reference import ExplicitHBISLayer, ExplicitNeck, use_reference_model


@pytest.mark.slow
def test_reference_decoder_gives_the_same_outputs() -> None:
    model = BiCoRSeg(tiny_config(topk_ratio=0.5)).double()
    reference = use_reference_model(copy.deepcopy(model))
    assert type(reference.neck) is ExplicitNeck
    assert all(type(layer) is ExplicitHBISLayer for layer in reference.layers)
    assert type(reference.backbone.features[1][0]) is CNBlock  # torchvision's block forward
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    ours, theirs = model.train().forward_train(x), reference.train().forward_train(x)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.aux_logits, theirs.aux_logits, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x[:, :, :50]), reference.eval()(x[:, :, :50]))
