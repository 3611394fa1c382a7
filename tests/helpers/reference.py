"""Explicit, memory-hungry forms of the neck, CE2F and the output head, as the method is written.

The model computes them in fused or closed form (:class:`FusedNeck`, :meth:`HBISLayer.feature_update`,
``BiCoRSeg._classify``). These reference forms are the oracles of the tests that check the closed
forms give the same numbers, and the baselines of ``benchmarks/hbis.py`` and ``benchmarks/speed.py``
(:func:`use_reference_model` switches a whole model to them). The package never calls them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.models.convnext import CNBlock

from bicorseg.models.backbone import InferenceCNBlock
from bicorseg.models.bicorseg import BiCoRSeg
from bicorseg.models.hbis import HBISLayer
from bicorseg.models.neck import FusedNeck


def neck_explicit(neck: FusedNeck, stages: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Project each stage, resize, concatenate in the order 4, 3, 2, 1, then the 1x1 convolution."""
    maps = []
    for proj, x in zip(neck.proj, stages):
        y = proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        maps.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
    fused: torch.Tensor = neck.fuse(torch.cat(maps[::-1], dim=1))
    return fused


def classify_explicit(model: BiCoRSeg, kernels: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Logits ``<kernels[b, n], U(feats)[b, :, x]>`` with U applied as written (features B x C x h x w)."""
    return torch.einsum("bnc,bchw->bnhw", kernels, model.upsampler(feats))


def feature_update_explicit(
    layer: HBISLayer, feats: torch.Tensor, class_emb: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """CE2F as the explicit sum over classes (features B x h x w x C): builds a B x N x h x w x C tensor."""
    assign, gamma, beta = layer.film_terms(class_emb, scores)
    b, h, w, _ = feats.shape
    assign = assign.view(b, -1, h, w, 1)
    modulated = gamma[:, :, None, None, :] * feats.unsqueeze(1) + beta[:, :, None, None, :]
    refined = (assign * modulated).sum(dim=1)
    return (1 - layer.lambda_film) * feats + layer.lambda_film * refined


class ExplicitHBISLayer(HBISLayer):
    """An HBIS layer that computes CE2F explicitly (same parameters, same numbers, more memory)."""

    def feature_update(
        self, feats: torch.Tensor, class_emb: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        return feature_update_explicit(self, feats, class_emb, scores)


def use_explicit_ce2f(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every HBIS layer of ``model`` to the explicit CE2F in place (parameters unchanged)."""
    for module in model.modules():
        if type(module) is HBISLayer:
            module.__class__ = ExplicitHBISLayer
    return model


class ExplicitNeck(FusedNeck):
    """The neck as written (per-stage projections at stride 4, a 4C concatenation, the 1x1 fusion)."""

    def forward(self, stages: Sequence[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        return neck_explicit(self, stages, size or (int(stages[0].shape[-2]), int(stages[0].shape[-1])))


class ReferenceBiCoRSeg(BiCoRSeg):
    """BiCoR-Seg whose head applies the upsampler as written and keeps its intermediates for backward."""

    def _head(self, kernels: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return classify_explicit(self, kernels, feats.permute(0, 3, 1, 2))


def use_torchvision_blocks(model: torch.nn.Module) -> torch.nn.Module:
    """Switch the backbone's ConvNeXt blocks in place to torchvision's own forward (parameters unchanged)."""
    for module in model.modules():
        if type(module) is InferenceCNBlock:
            module.__class__ = CNBlock
    return model


def use_reference_model(model: BiCoRSeg) -> BiCoRSeg:
    """Switch ``model`` in place to the explicit neck, CE2F and head and torchvision's ConvNeXt block
    forward (parameters unchanged): the model as the method and torchvision write it, the baseline of
    ``benchmarks/speed.py``."""
    use_explicit_ce2f(use_torchvision_blocks(model))
    model.neck.__class__ = ExplicitNeck
    model.__class__ = ReferenceBiCoRSeg
    return model
