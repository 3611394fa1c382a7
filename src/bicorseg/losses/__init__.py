"""The BiCoR-Seg training objective (SPEC 1.5): SoftCE, Dice, heatmap supervision, Fisher loss."""

from bicorseg.losses.fisher import fisher_discriminant
from bicorseg.losses.objective import BiCoRSegLoss, LossConfig
from bicorseg.losses.segmentation import dice_loss, soft_cross_entropy

__all__ = ["BiCoRSegLoss", "LossConfig", "dice_loss", "fisher_discriminant", "soft_cross_entropy"]
