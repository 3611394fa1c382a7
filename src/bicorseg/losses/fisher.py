"""Fisher discriminative loss on class embeddings (docs/METHOD.md, section 5): within-class over between-class scatter."""

from __future__ import annotations

import torch

from bicorseg.distributed import all_gather_with_grad


def fisher_discriminant(class_emb: torch.Tensor) -> torch.Tensor:
    """``Sw / (Sb + 1e-6)`` for embeddings B x N x C, with class means over the global batch.

    ``Sw`` is the mean over (b, n) of ``||CE[b, n] - mu_n||^2``; ``Sb`` the mean over class pairs
    ``n < m`` of ``||mu_n - mu_m||^2``, clamped below at 1e-4.
    """
    emb = all_gather_with_grad(class_emb)
    means = emb.mean(dim=0)
    within = (emb - means).pow(2).sum(dim=-1).mean()
    num_classes = means.shape[0]
    rows, cols = torch.triu_indices(num_classes, num_classes, offset=1, device=means.device)
    between = (means[rows] - means[cols]).pow(2).sum(dim=-1).mean().clamp_min(1e-4)
    return within / (between + 1e-6)
