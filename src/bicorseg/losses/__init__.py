"""The BiCoR-Seg training objective (docs/METHOD.md, section 5): SoftCE, Dice, heatmap supervision, Fisher loss.

The names are imported on first use, so that :mod:`bicorseg.losses.config` is read without torch.
"""

from __future__ import annotations

from bicorseg.lazy import lazy_exports

_EXPORTS = {
    "BiCoRSegLoss": "bicorseg.losses.objective",
    "LossConfig": "bicorseg.losses.config",
    "fisher_discriminant": "bicorseg.losses.fisher",
    "dice_loss": "bicorseg.losses.segmentation",
    "pool_labels": "bicorseg.losses.segmentation",
    "soft_cross_entropy": "bicorseg.losses.segmentation",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
