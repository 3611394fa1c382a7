"""The objective's weights and constants as data: :class:`LossConfig` (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bicorseg.errors import ConfigError


@dataclass
class LossConfig:
    """Weights and constants of the objective; defaults are the published ones.

    The terms are defined in docs/METHOD.md, section 5.

    Attributes:
        ignore_index: the label value that is not scored (default in a training config: the dataset's).
        label_smoothing: label smoothing of the soft cross-entropy terms, in [0, 1).
        dice_smooth: smoothing constant added to the Dice numerator and denominator.
        dice_eps: floor on the Dice denominator.
        aux_weight: weight of the auxiliary head's soft cross-entropy.
        heatmap_weight: weight of the heatmap supervision terms (one per HBIS layer).
        heatmap_layer_weights: one weight per HBIS layer for the heatmap terms (null: 1 each).
        fisher_weight: weight of the Fisher discriminant terms on the class embeddings.
        fisher_layer_weights: one weight per HBIS layer for the Fisher terms (null: 1 each).
        final_fisher_weight: the LoveDA recipe's extra Fisher term on the last layer (1.0 there), else 0.
        class_balance: alpha of the class weights of the soft cross-entropy terms: a pixel weighs
            ``share ** -alpha``, the share of its class among the labelled pixels of the training
            batches seen so far (counted per process; shares below 0.1 % count as 0.1 %),
            normalised so that the average labelled pixel weighs 1. 0: every pixel weighs 1 (the
            published objective); 0.5: rare classes weigh more, by the square root of their rarity.
    """

    ignore_index: int
    label_smoothing: float = 0.05
    dice_smooth: float = 0.05
    dice_eps: float = 1e-7
    aux_weight: float = 0.4
    heatmap_weight: float = 0.1
    heatmap_layer_weights: list[float] | None = None
    fisher_weight: float = 0.1
    fisher_layer_weights: list[float] | None = None
    final_fisher_weight: float = 0.0
    class_balance: float = 0.0

    def __post_init__(self) -> None:
        for key in (
            "label_smoothing",
            "aux_weight",
            "heatmap_weight",
            "fisher_weight",
            "final_fisher_weight",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"must not be negative, got {getattr(self, key)}", key=f"loss.{key}")
        if not 0 <= self.class_balance <= 1:
            raise ConfigError(f"must be in [0, 1], got {self.class_balance}", key="loss.class_balance")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"must be in [0, 1), got {self.label_smoothing}", key="loss.label_smoothing")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
