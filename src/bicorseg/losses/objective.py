"""The full BiCoR-Seg objective: main + auxiliary + heatmap supervision + Fisher terms (docs/METHOD.md, section 5).

``BiCoRSegLoss(config)(output, labels)`` returns a dict of scalar tensors, one per term, plus
``total``. The keys are ``main_softce``, ``main_dice``, ``aux_softce``, ``heatmap_{l}``,
``fisher_{l}`` (layers counted from 0, as the reference outputs), ``fisher_final_extra`` when enabled, and ``total``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from bicorseg.distributed import all_reduce_sum_with_grad
from bicorseg.errors import ConfigError, InputError
from bicorseg.losses.config import LossConfig
from bicorseg.losses.fisher import fisher_discriminant
from bicorseg.losses.segmentation import dice_from_sums, dice_sums, soft_cross_entropy
from bicorseg.models.bicorseg import TrainOutput


def _layer_weights(weights: list[float] | None, layers: int, key: str) -> list[float]:
    if weights is None:
        return [1.0] * layers
    if len(weights) != layers:
        raise ConfigError(f"loss.{key}: {len(weights)} weights given for {layers} HBIS layers")
    return list(weights)


class BiCoRSegLoss(torch.nn.Module):
    """Computes every term of the objective from a :class:`TrainOutput` and the label map."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        self.class_pixels: torch.Tensor | None = None  # labelled pixels per class seen in training

    def class_weights(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
        """The soft cross-entropy's class weights (``loss.class_balance``), counting ``labels`` first
        when the module is training; None when the balance is 0."""
        alpha = self.config.class_balance
        if not alpha:
            return None
        if self.class_pixels is None or self.class_pixels.device != labels.device:
            self.class_pixels = torch.zeros(num_classes, dtype=torch.float64, device=labels.device)
        if self.training:
            valid = labels[labels != self.config.ignore_index]
            self.class_pixels += torch.bincount(valid.flatten(), minlength=num_classes)[:num_classes]
        total = float(self.class_pixels.sum())
        if not total:
            return None
        share = self.class_pixels / total
        weights = share.clamp_min(1e-3) ** -alpha
        return (weights / (share * weights).sum()).float()

    def segmentation(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        resize: bool = False,
        class_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(SoftCE, Dice) of logits against labels; ``resize`` first resizes the logits to the labels;
        ``class_weights`` weigh the SoftCE's pixels by their class.

        The full-resolution work (resizing, softmax, log-softmax) is recomputed in the backward pass
        instead of being stored: it is cheap, and it is most of the objective's memory. The Dice sums
        are reduced across processes outside the recomputed part.
        """
        if torch.is_grad_enabled() and logits.requires_grad:
            softce, sums = checkpoint(
                self._local_terms, logits, labels, resize, class_weights, use_reentrant=False
            )
        else:
            softce, sums = self._local_terms(logits, labels, resize, class_weights)
        cfg = self.config
        return softce, dice_from_sums(all_reduce_sum_with_grad(sums), cfg.dice_smooth, cfg.dice_eps)

    def _local_terms(
        self, logits: torch.Tensor, labels: torch.Tensor, resize: bool, class_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if resize:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        softce = soft_cross_entropy(logits, labels, cfg.ignore_index, cfg.label_smoothing, class_weights)
        return softce, dice_sums(logits, labels, cfg.ignore_index)

    def forward(self, output: TrainOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if labels.shape[-2:] != output.logits.shape[-2:]:
            raise InputError(
                f"label size {tuple(labels.shape[-2:])} differs from the logits' {tuple(output.logits.shape[-2:])}"
                " (a model with downsample k trains at 1/k: pool the labels with bicorseg.losses.pool_labels)"
            )
        layers = len(output.heatmap_logits)
        terms: dict[str, torch.Tensor] = {}
        weights = self.class_weights(labels, output.logits.shape[1])
        terms["main_softce"], terms["main_dice"] = self.segmentation(output.logits, labels, False, weights)
        total = terms["main_softce"] + terms["main_dice"]
        if output.aux_logits is not None and cfg.aux_weight:
            terms["aux_softce"] = _maybe_checkpoint(
                soft_cross_entropy, output.aux_logits, labels, cfg.ignore_index, cfg.label_smoothing, weights
            )
            total = total + cfg.aux_weight * terms["aux_softce"]
        heat_weights = _layer_weights(cfg.heatmap_layer_weights, layers, "heatmap_layer_weights")
        for index, (heat, weight) in enumerate(zip(output.heatmap_logits, heat_weights)):
            softce, dice = self.segmentation(heat, labels, True, weights)
            term = softce + dice
            terms[f"heatmap_{index}"] = term
            total = total + cfg.heatmap_weight * weight * term
        fisher_weights = _layer_weights(cfg.fisher_layer_weights, layers, "fisher_layer_weights")
        for index, (emb, weight) in enumerate(zip(output.class_embeddings, fisher_weights)):
            terms[f"fisher_{index}"] = fisher_discriminant(emb)
            total = total + cfg.fisher_weight * weight * terms[f"fisher_{index}"]
        if cfg.final_fisher_weight:
            terms["fisher_final_extra"] = terms[f"fisher_{layers - 1}"]
            total = total + cfg.final_fisher_weight * terms["fisher_final_extra"]
        terms["total"] = total
        return terms


def _maybe_checkpoint(
    function: Callable[..., torch.Tensor], tensor: torch.Tensor, *args: Any
) -> torch.Tensor:
    """``function(tensor, *args)``, recomputed in backward rather than storing its intermediates."""
    if torch.is_grad_enabled() and tensor.requires_grad:
        return checkpoint(function, tensor, *args, use_reentrant=False)
    return function(tensor, *args)
