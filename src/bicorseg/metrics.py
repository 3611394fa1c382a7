"""Segmentation metrics by the published convention (docs/METHOD.md, section 8): one confusion matrix, scores, reports.

:class:`ConfusionMatrix` accumulates one matrix over a whole evaluation set, summed across processes
(data-parallel evaluation gives the single-process matrix); :func:`scores_from_confusion` gives the
per-class scores, their means over the dataset's evaluation classes and the overall accuracy over
all classes; :class:`PeriodicShare` measures the 4-pixel pattern an under-trained sub-pixel head
paints. :class:`EvaluationReport` pairs the scores with the convention they were computed under,
which :func:`format_report` (a table) and :func:`write_report_json` state.

A score whose denominator is zero (a class absent from both labels and predictions) is undefined:
it is NaN here, ``null`` in JSON, and left out of the means (the report says so).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from bicorseg.atomic import write_text_atomic
from bicorseg.errors import ConfigError, InputError


class ConfusionMatrix(MulticlassConfusionMatrix):
    """An ``N x N`` confusion matrix (rows ground truth, columns prediction), summed across processes.

    torchmetrics' ``MulticlassConfusionMatrix`` (its ``confmat`` state is summed across processes)
    with bicorseg's input checks: ``update(preds, target)`` takes predictions as scores
    ``B x N x H x W`` (logits or probabilities; the arg-max is taken) or as class indices
    ``B x H x W``, and labels ``B x H x W``. Pixels whose label is ``ignore_index`` are skipped; any
    other label outside ``0..N-1`` is an error naming the value.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        if num_classes < 2:
            raise ConfigError(f"at least 2 classes are needed, got {num_classes}", key="num_classes")
        super().__init__(num_classes, ignore_index=ignore_index, validate_args=False, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds = preds.detach()
        if preds.is_floating_point():
            if preds.ndim != target.ndim + 1 or preds.shape[1] != self.num_classes:
                raise InputError(
                    f"scores of shape {tuple(preds.shape)} do not fit {self.num_classes} classes and "
                    f"labels of shape {tuple(target.shape)}"
                )
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise InputError(
                f"prediction shape {tuple(preds.shape)} differs from label shape {tuple(target.shape)}"
            )
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            preds, target = preds[keep], target[keep]
        if target.numel() == 0:
            return
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            ignore = "" if self.ignore_index is None else f" and is not the ignore index {self.ignore_index}"
            raise InputError(f"label value {bad} is outside the classes 0..{self.num_classes - 1}{ignore}")
        if int(preds.min()) < 0 or int(preds.max()) >= self.num_classes:
            raise InputError(f"predicted class outside 0..{self.num_classes - 1}")
        super().update(preds, target)

    def compute(self) -> torch.Tensor:
        return self.confmat.clone()


class PeriodicShare(Metric):
    """The share of predicted class maps' variance that repeats every ``period`` pixels (default 4).

    For each class, the indicator map (1 where the class is predicted) is split into its mean over
    the pixels of each of the ``period x period`` phases (row and column modulo the period, from
    the map's top-left pixel). That per-phase mean is the map's 4-periodic part: its spread around
    the class's share is exactly the power of the map's Fourier spectrum at the 4-pixel period and
    its harmonics. The measure is that power summed over the classes, divided by the maps' whole
    variance (the power at every frequency but zero). A smooth map or real, irregular structure
    gives about 0 (random noise gives 16 / pixels); a map whose only structure is a 4-pixel
    checker gives 1. ``update`` takes scores ``B x N x H x W`` (the arg-max is taken) or class
    maps ``B x H x W``; the counts are summed across processes.
    """

    full_state_update = False
    counts: torch.Tensor

    def __init__(self, num_classes: int, period: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.period = num_classes, period
        zeros = torch.zeros(period * period, num_classes, dtype=torch.long)
        self.add_state("counts", default=zeros, dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor) -> None:
        preds = preds.detach()
        if preds.is_floating_point():
            preds = preds.argmax(dim=1)
        height, width = preds.shape[-2:]
        rows = torch.arange(height, device=preds.device) % self.period
        cols = torch.arange(width, device=preds.device) % self.period
        phase = rows[:, None] * self.period + cols[None, :]
        index = (phase * self.num_classes + preds.long()).reshape(-1)
        self.counts += torch.bincount(index, minlength=self.counts.numel()).view_as(self.counts)

    def compute(self) -> torch.Tensor:
        return torch.tensor(periodic_share(self.counts), dtype=torch.float64)


def periodic_share(counts: torch.Tensor) -> float:
    """The measure of :class:`PeriodicShare` from its counts (phases x classes); NaN without pixels."""
    counts = counts.detach().to(torch.float64).cpu()
    total = counts.sum()
    if total == 0:
        return math.nan
    per_phase = counts.sum(dim=1, keepdim=True)
    share = counts.sum(dim=0) / total  # each class's share of the pixels
    phase_share = counts / per_phase.clamp_min(1)
    periodic = ((per_phase / total) * (phase_share - share) ** 2).sum()
    variance = (share * (1 - share)).sum()
    return float(periodic / variance) if variance > 0 else 0.0


@dataclass
class Scores:
    """Per-class scores (length-N float64 tensors, NaN where undefined) and their summaries."""

    iou: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    support: torch.Tensor  # ground-truth pixels per class
    eval_classes: tuple[int, ...]
    miou: float
    mean_f1: float
    mean_precision: float
    mean_recall: float
    oa: float
    total_pixels: int


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def scores_from_confusion(confmat: torch.Tensor, eval_classes: Sequence[int] | None = None) -> Scores:
    """Scores of a confusion matrix (rows ground truth, columns prediction).

    Means (mIoU, mean F1, mean precision, mean recall) average over ``eval_classes`` (all classes when
    None), skipping undefined values; OA is the trace over the total, over all classes.
    """
    matrix = confmat.detach().to(torch.float64).cpu()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InputError(f"a confusion matrix must be square, got shape {tuple(matrix.shape)}")
    n = matrix.shape[0]
    classes = tuple(range(n)) if eval_classes is None else tuple(int(c) for c in eval_classes)
    if not classes or any(not 0 <= c < n for c in classes):
        raise ConfigError(f"must be class indices in 0..{n - 1}, got {classes}", key="eval_classes")
    tp = matrix.diagonal()
    fp = matrix.sum(dim=0) - tp  # predicted as the class, labelled otherwise
    fn = matrix.sum(dim=1) - tp  # labelled as the class, predicted otherwise
    iou = _ratio(tp, tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    # F1 of a class with TP = 0 but some FP or FN is 0, not undefined.
    f1 = torch.where(torch.isnan(f1) & (tp + fp + fn > 0), torch.zeros_like(f1), f1)
    index = torch.tensor(classes)
    total = matrix.sum()
    return Scores(
        iou=iou,
        precision=precision,
        recall=recall,
        f1=f1,
        support=matrix.sum(dim=1).long(),
        eval_classes=classes,
        miou=float(iou[index].nanmean()),
        mean_f1=float(f1[index].nanmean()),
        mean_precision=float(precision[index].nanmean()),
        mean_recall=float(recall[index].nanmean()),
        oa=float(tp.sum() / total) if total > 0 else math.nan,
        total_pixels=int(total),
    )


@dataclass
class Convention:
    """How a set of scores was obtained; printed with every report."""

    dataset: str
    split: str = ""
    label_variant: str = "full"
    mode: str = "patches"  # "patches" or "whole tiles (...)"
    tta: str = "none"  # the mode, e.g. "paper (vaihingen)"
    tta_detail: str = ""  # its passes in words (bicorseg.inference.tta.describe_tta)
    tta_passes: list[dict[str, Any]] = field(default_factory=list)  # every pass, for the JSON
    protocol: str = ""  # how the data was prepared: "clean", "paper (...)"; "" when not prepared
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    """Scores, the confusion matrix they come from, the class names and the convention."""

    confmat: torch.Tensor
    class_names: tuple[str, ...]
    convention: Convention
    scores: Scores
    period4_share: float | None = None  # PeriodicShare of the predictions; None: not measured

    @classmethod
    def from_confusion(
        cls,
        confmat: torch.Tensor,
        class_names: Sequence[str],
        eval_classes: Sequence[int] | None,
        convention: Convention,
        period4_share: float | None = None,
    ) -> EvaluationReport:
        if len(class_names) != confmat.shape[0]:
            raise ConfigError(f"{len(class_names)} class names for a {confmat.shape[0]}-class matrix")
        return cls(
            confmat.detach().cpu().long(),
            tuple(class_names),
            convention,
            scores_from_confusion(confmat, eval_classes),
            period4_share,
        )

    def convention_lines(self) -> list[str]:
        conv, scores = self.convention, self.scores
        averaged = [self.class_names[c] for c in scores.eval_classes]
        left_out = [name for i, name in enumerate(self.class_names) if i not in scores.eval_classes]
        lines = [
            f"dataset: {conv.dataset}" + (f", split: {conv.split}" if conv.split else ""),
            f"labels: {conv.label_variant}",
            f"evaluated on: {conv.mode}",
            *([f"data preparation protocol: {conv.protocol}"] if conv.protocol else []),
            f"test-time augmentation: {conv.tta}" + (f": {conv.tta_detail}" if conv.tta_detail else ""),
            f"mIoU / mean F1 average {len(averaged)} of {len(self.class_names)} classes ("
            + ", ".join(averaged)
            + (f"; left out: {', '.join(left_out)}" if left_out else "")
            + "); OA counts all classes; ignored pixels are excluded everywhere",
            "one confusion matrix over the whole set; classes absent from labels and predictions "
            "are undefined and left out of the means",
        ]
        lines += [f"{key}: {value}" for key, value in conv.extra.items()]
        return lines

    def to_dict(self) -> dict[str, Any]:
        s = self.scores
        per_class = {
            name: {
                **{
                    score: _json_float(getattr(s, score)[i]) for score in ("iou", "precision", "recall", "f1")
                },
                "support_pixels": int(s.support[i]),
                "in_means": i in s.eval_classes,
            }
            for i, name in enumerate(self.class_names)
        }
        conv = asdict(self.convention)
        return {
            "convention": {
                **{key: value for key, value in conv.items() if key != "extra"},
                "classes_averaged": [self.class_names[c] for c in s.eval_classes],
                "oa_classes": "all",
                "undefined_scores": "null, left out of the means",
                "confusion_matrix_axes": "rows ground truth, columns prediction",
                **conv["extra"],
            },
            **{
                key: _json_float(getattr(s, key))
                for key in ("miou", "mean_f1", "mean_precision", "mean_recall", "oa")
            },
            "pixels": s.total_pixels,
            "period4_share": None if self.period4_share is None else _json_float(self.period4_share),
            "per_class": per_class,
            "class_names": list(self.class_names),
            "confusion_matrix": self.confmat.tolist(),
        }


def _json_float(value: float | torch.Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _pct(value: float | torch.Tensor) -> str:
    value = float(value)
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def format_report(report: EvaluationReport, convention: bool = True) -> str:
    """A readable per-class table (scores in %), the means, OA, and (unless left out) the convention used."""
    s = report.scores
    width = max(12, *(len(n) for n in report.class_names)) + 2
    header = f"{'class':<{width}}{'IoU':>8}{'Prec.':>8}{'Recall':>8}{'F1':>8}{'pixels':>14}  in means"
    lines = ["Convention:", *(f"  {line}" for line in report.convention_lines()), ""] if convention else []
    lines += [header, "-" * len(header)]
    for i, name in enumerate(report.class_names):
        lines.append(
            f"{name:<{width}}{_pct(s.iou[i]):>8}{_pct(s.precision[i]):>8}{_pct(s.recall[i]):>8}"
            f"{_pct(s.f1[i]):>8}{int(s.support[i]):>14}  {'yes' if i in s.eval_classes else 'no'}"
        )
    lines += [
        "-" * len(header),
        f"{'mean (' + str(len(s.eval_classes)) + ' cl.)':<{width}}{_pct(s.miou):>8}{_pct(s.mean_precision):>8}"
        f"{_pct(s.mean_recall):>8}{_pct(s.mean_f1):>8}",
        f"mIoU {_pct(s.miou)}  mean F1 {_pct(s.mean_f1)}  OA {_pct(s.oa)}  ({s.total_pixels} pixels)",
    ]
    if report.period4_share is not None:
        lines.append(
            f"4-pixel pattern: {_pct(report.period4_share)} % of the predicted maps' variance "
            "(0 for none; a checker the size of the head's 4 x 4 blocks raises it)"
        )
    return "\n".join(lines)


def write_report_json(report: EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write the report (convention included) as JSON, atomically."""
    return write_text_atomic(path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
