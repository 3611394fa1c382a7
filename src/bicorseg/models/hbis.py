"""The HBIS layer (Heatmap-driven Bidirectional Information Synergy) (docs/METHOD.md, section 3).

One layer refines the class embeddings from the pixels they light up (F2CE), then the pixels from
the class embeddings (CE2F, FiLM style). CE2F is computed in closed form: because the class-softmax
weights are shared across channels,
``sum_n s_n (gamma_n * F + beta_n) = F * (sum_n s_n gamma_n) + sum_n s_n beta_n``,
one small contraction over the classes instead of a B x N x C x h x w tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bicorseg.models.config import PixelSelection


@torch.no_grad()
def pixel_weights(heat: torch.Tensor, selection: PixelSelection) -> torch.Tensor:
    """Per-class pixel weights (B x N x P) from sigmoid heatmaps (B x N x P); each row sums to one.

    Selected pixels keep their heat, the rest get zero, and the row is divided by its sum (plus 1e-6,
    as the reference implementation does); when that sum is at most 1e-6 the whole sigmoid map,
    normalised the same way, is used instead.
    """
    total = int(heat.shape[-1])
    if selection.mode == "topk":
        k = selection.num_pixels(total)
        if k >= total:
            kept = heat
        else:
            values, indices = heat.topk(k, dim=-1)
            kept = torch.zeros_like(heat).scatter_(-1, indices, values)
    else:
        if selection.mode == "threshold":
            cut = torch.full_like(heat[..., :1], selection.threshold)
        else:
            cut = torch.quantile(heat.float(), selection.threshold, dim=-1, keepdim=True).to(heat.dtype)
        kept = torch.where(heat >= cut, heat, torch.zeros_like(heat))
    mass = kept.sum(dim=-1, keepdim=True)
    fallback = heat / (heat.sum(dim=-1, keepdim=True) + 1e-6)
    return torch.where(mass > 1e-6, kept / (mass + 1e-6), fallback)


class HBISLayer(nn.Module):
    """One HBIS layer: ``(CE_{l-1}, F_{l-1}) -> (CE_l, F_l, S_l / tau)``.

    Features are channels-last (B x h x w x C) inside the decoder: LayerNorm, the 1x1 value map and
    every contraction then run on contiguous memory without permuted copies. The parameters keep the
    published shapes (the value map is a 1x1 convolution), so checkpoints stay compatible.
    """

    def __init__(
        self,
        width: int,
        selection: PixelSelection | None = None,
        lambda_film: float = 0.5,
        tau: float = 1.0,
        inner_steps: int = 1,
    ) -> None:
        super().__init__()
        self.width = width
        self.selection = selection or PixelSelection()
        self.lambda_film = lambda_film
        self.tau = tau
        self.inner_steps = inner_steps
        self.class_norm = nn.LayerNorm(width)
        self.feat_norm = nn.LayerNorm(width)
        self.query = nn.Linear(width, width, bias=False)
        self.value = nn.Conv2d(width, width, kernel_size=1, bias=False)
        self.gate = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, width))
        self.candidate = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.gamma = nn.Linear(width, width)
        self.beta = nn.Linear(width, width)

    def scores(self, class_emb: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised features (B x P x C) and heatmap scores S (B x N x P), P = h*w."""
        normed = self.feat_norm(feats.flatten(1, 2))
        query = self.query(self.class_norm(class_emb))
        scores = torch.bmm(query, normed.transpose(1, 2)) / math.sqrt(self.width)
        return normed, scores

    def class_update(
        self, class_emb: torch.Tensor, normed: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """F2CE: gated update of the class embeddings from the features of their selected pixels."""
        weights = pixel_weights(torch.sigmoid(scores), self.selection).to(normed.dtype)
        # sum_p w[n, p] (W_v Fn[p]) = W_v (sum_p w[n, p] Fn[p]): pool first, then one N x C x C map,
        # instead of applying W_v to every pixel (P x C x C)
        context = F.linear(torch.bmm(weights, normed), self.value.weight.flatten(1))
        normed_classes = self.class_norm(class_emb)
        gate = torch.sigmoid(self.gate(torch.cat([normed_classes, context], dim=-1)))
        updated: torch.Tensor = gate * self.candidate(context) + (1 - gate) * class_emb
        return updated

    def film_terms(
        self, class_emb: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-softmax weights and FiLM parameters: (B x N x P, B x N x C, B x N x C)."""
        assign = torch.softmax(scores / self.tau, dim=1)
        gamma = 1 + torch.tanh(self.gamma(class_emb))
        beta = self.beta(class_emb)
        return assign, gamma, beta

    def feature_update(
        self, feats: torch.Tensor, class_emb: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """CE2F in closed form; ``feats`` is B x h x w x C.

        With s the class-softmax weights (summing to one over n),
        ``(1 - lam) F + lam sum_n s_n (gamma_n F + beta_n) = F * (s^T g) + s^T b`` where
        ``g = (1 - lam) + lam gamma`` and ``b = lam beta``: matrix products over N and one fused
        multiply-add over the features. (Two products rather than one on concatenated parameters,
        so that only ``scale`` is kept for the backward pass.)
        """
        assign, gamma, beta = self.film_terms(class_emb, scores)
        lam = self.lambda_film
        weights = assign.transpose(1, 2)
        scale = torch.bmm(weights, (1 - lam) + lam * gamma).view(feats.shape)
        shift = torch.bmm(weights, lam * beta).view(feats.shape)
        return torch.addcmul(shift, feats, scale)

    def forward(
        self, class_emb: torch.Tensor, feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``class_emb`` B x N x C, ``feats`` B x h x w x C (channels-last).

        Returns (CE_l: B x N x C, F_l: B x h x w x C, heatmap logits S_l / tau: B x N x h x w).
        """
        scores = None
        for _ in range(self.inner_steps):
            normed, scores = self.scores(class_emb, feats)
            class_emb = self.class_update(class_emb, normed, scores)
            feats = self.feature_update(feats, class_emb, scores)
        if scores is None:
            raise ValueError("an HBIS layer needs at least one inner step")
        b, h, w, _ = feats.shape
        return class_emb, feats, (scores / self.tau).view(b, -1, h, w)
