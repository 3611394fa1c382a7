"""SoftCE and Dice exactly as the published numbers used them (docs/METHOD.md, section 5).

Two conventions matter and differ from torch's defaults:

* SoftCE averages over *all* B*H*W pixels; ignored pixels contribute zero but still count.
* Dice sums over the whole batch and all pixels per class, sets the loss of classes absent from the
  batch's targets to zero, and averages over all N classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bicorseg.distributed import all_reduce_sum_with_grad


def _valid_targets(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = target != ignore_index
    return torch.where(valid, target, torch.zeros_like(target)), valid


def soft_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    smoothing: float = 0.05,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label-smoothed cross entropy: ``(1 - eps) * -log p_y + (eps / N) * sum_c -log p_c`` per pixel.

    The mean runs over all pixels, ignored ones counting as zero; ``class_weights`` (one per class)
    scales each pixel's term by the weight of its true class.
    """
    log_probs = F.log_softmax(logits, dim=1)
    safe_target, valid = _valid_targets(target, ignore_index)
    nll = -log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    smooth = -log_probs.mean(dim=1)
    per_pixel = (1 - smoothing) * nll + smoothing * smooth
    if class_weights is not None:
        per_pixel = per_pixel * class_weights.to(per_pixel.dtype)[safe_target]
    return torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).mean()


def pool_labels(labels: torch.Tensor, factor: int, ignore_index: int) -> torch.Tensor:
    """Each ``factor`` x ``factor`` block of a B x H x W label map as its most frequent labelled class
    (the lowest on a tie), or ``ignore_index`` where the whole block is ignored; H and W must be
    multiples of ``factor``."""
    if factor == 1:
        return labels
    best = torch.zeros_like(labels[:, ::factor, ::factor], dtype=torch.float32)
    pooled = torch.full_like(labels[:, ::factor, ::factor], ignore_index)
    for value in torch.unique(labels).tolist():
        if value == ignore_index:
            continue
        share = F.avg_pool2d((labels == value).float().unsqueeze(1), factor).squeeze(1)
        more = share > best
        pooled = torch.where(more, value, pooled)
        best = torch.where(more, share, best)
    return pooled


def dice_sums(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-class sums of one batch for Dice: rows ``sum p_c t_c``, ``sum (p_c + t_c)``, ``sum t_c``.

    Computed without the one-hot tensor: each valid pixel adds its probability of its own class to
    its class's bin, and counts as one target pixel there.
    """
    num_classes = logits.shape[1]
    safe_target, valid = _valid_targets(target, ignore_index)
    weight = valid.to(logits.dtype)
    probs = torch.softmax(logits, dim=1)
    prob_mass = torch.einsum("bnhw,bhw->n", probs, weight)
    own_class = probs.gather(1, safe_target.unsqueeze(1)).squeeze(1) * weight
    bins = logits.new_zeros(num_classes)
    intersection = bins.index_add(0, safe_target.flatten(), own_class.flatten())
    counts = bins.index_add(0, safe_target.flatten(), weight.flatten())
    return torch.stack([intersection, prob_mass + counts, counts])


def dice_from_sums(sums: torch.Tensor, smooth: float = 0.05, eps: float = 1e-7) -> torch.Tensor:
    """``mean_c`` of ``1 - (2 I_c + smooth) / max(S_c + smooth, eps)``, zero for classes without targets."""
    intersection, cardinality, present = sums
    score = (2 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    loss: torch.Tensor = ((1 - score) * (present > 0).to(score.dtype)).mean()
    return loss


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    smooth: float = 0.05,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Multi-class soft Dice over the whole (global) batch; absent classes contribute zero.

    Per class c, with p the softmax and t the one-hot targets, both zero on ignored pixels:
    ``score_c = (2 sum p_c t_c + smooth) / max(sum (p_c + t_c) + smooth, eps)``.
    """
    return dice_from_sums(all_reduce_sum_with_grad(dice_sums(logits, target, ignore_index)), smooth, eps)
