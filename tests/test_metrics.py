"""The confusion-matrix metric and the scores against matrices worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bicorseg.errors import InputError
from bicorseg.metrics import (
    ConfusionMatrix,
    Convention,
    EvaluationReport,
    PeriodicShare,
    format_report,
    periodic_share,
    scores_from_confusion,
    write_report_json,
)


def test_confusion_matrix_counts_by_hand() -> None:
    # 3 classes, ignore 255. Pairs (label, prediction):
    # (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,2) (2,0) (255,1) (255,0)
    target = torch.tensor([[0, 0, 0, 1, 1], [2, 2, 2, 255, 255]])
    preds = torch.tensor([[0, 0, 1, 1, 2], [2, 2, 0, 1, 0]])
    metric = ConfusionMatrix(3, ignore_index=255)
    metric.update(preds.unsqueeze(0), target.unsqueeze(0))
    expected = torch.tensor([[2, 1, 0], [0, 1, 1], [1, 0, 2]])
    assert torch.equal(metric.compute(), expected)
    # accumulation over batches, and scores (logits) instead of indices
    logits = torch.nn.functional.one_hot(preds, 3).permute(2, 0, 1).float().unsqueeze(0)
    metric.update(logits, target.unsqueeze(0))
    assert torch.equal(metric.compute(), 2 * expected)
    metric.reset()
    assert metric.confmat.sum() == 0


def test_scores_by_hand() -> None:
    # rows ground truth, columns prediction
    m = torch.tensor([[50, 2, 3], [4, 30, 6], [0, 0, 5]])
    s = scores_from_confusion(m, eval_classes=[0, 1])
    # class 0: TP 50, FP 4, FN 5; class 1: TP 30, FP 2, FN 10; class 2: TP 5, FP 9, FN 0
    assert s.iou.tolist() == pytest.approx([50 / 59, 30 / 42, 5 / 14])
    assert s.precision.tolist() == pytest.approx([50 / 54, 30 / 32, 5 / 14])
    assert s.recall.tolist() == pytest.approx([50 / 55, 30 / 40, 5 / 5])
    f1_0 = 2 * (50 / 54) * (50 / 55) / (50 / 54 + 50 / 55)
    assert s.f1[0].item() == pytest.approx(f1_0)
    assert s.f1[0].item() == pytest.approx(2 * 50 / (2 * 50 + 4 + 5))  # F1 = 2TP / (2TP + FP + FN)
    assert s.miou == pytest.approx((50 / 59 + 30 / 42) / 2)  # class 2 left out of the means
    assert s.mean_f1 == pytest.approx((2 * 50 / 109 + 2 * 30 / 72) / 2)
    assert s.oa == pytest.approx(85 / 100)  # all classes, including the one left out of the means
    assert s.support.tolist() == [55, 40, 5]
    assert s.total_pixels == 100


def test_undefined_classes_are_nan_and_left_out() -> None:
    m = torch.tensor([[10, 0, 0], [0, 0, 0], [5, 0, 0]])
    s = scores_from_confusion(m)
    assert math.isnan(s.iou[1]) and math.isnan(s.f1[1])  # absent from labels and predictions
    assert s.iou[2] == 0 and s.f1[2] == 0 and math.isnan(s.precision[2])  # missed entirely
    assert s.miou == pytest.approx((10 / 15 + 0) / 2)
    assert s.oa == pytest.approx(10 / 15)


def test_label_outside_classes_is_refused() -> None:
    metric = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(InputError, match="label value 7"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(InputError, match="differs"):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


def test_metric_matches_random_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    n = 5
    metric = ConfusionMatrix(n, ignore_index=6)
    reference = torch.zeros(n, n, dtype=torch.long)
    for _ in range(3):
        target = torch.randint(0, n + 1, (2, 8, 8), generator=generator)
        target[target == n] = 6  # the ignore index
        preds = torch.randint(0, n, (2, 8, 8), generator=generator)
        metric.update(preds, target)
        for t, p in zip(target.flatten().tolist(), preds.flatten().tolist()):
            if t != 6:
                reference[t, p] += 1
    assert torch.equal(metric.compute(), reference)


def test_report_states_convention(tmp_path) -> None:
    m = torch.tensor([[50, 2, 3], [4, 30, 6], [0, 0, 5]])
    report = EvaluationReport.from_confusion(
        m,
        ["impervious", "building", "clutter"],
        [0, 1],
        Convention("vaihingen", split="test", label_variant="eroded", mode="whole tiles", tta="d4"),
    )
    text = format_report(report)
    for needle in ("eroded", "whole tiles", "d4", "average 2 of 3 classes", "left out: clutter", "OA"):
        assert needle in text
    assert "84.75" in text  # IoU of class 0 in %
    path = write_report_json(report, tmp_path / "out" / "metrics.json")
    data = json.loads(path.read_text())
    assert data["convention"]["classes_averaged"] == ["impervious", "building"]
    assert data["convention"]["tta"] == "d4" and data["convention"]["label_variant"] == "eroded"
    assert data["miou"] == pytest.approx((50 / 59 + 30 / 42) / 2)
    assert data["per_class"]["clutter"]["in_means"] is False
    assert data["confusion_matrix"] == m.tolist()


def _share(*maps: torch.Tensor, num_classes: int = 3) -> float:
    metric = PeriodicShare(num_classes)
    for classes in maps:
        metric.update(classes[None])
    return float(metric.compute())


def test_periodic_share_of_a_checker_a_smooth_map_and_noise() -> None:
    # "land" everywhere with one pixel of "water" in every 4 x 4 block: all of its structure is the pattern
    checker = torch.zeros(64, 64, dtype=torch.long)
    checker[1::4, 2::4] = 1
    assert _share(checker) == pytest.approx(1.0)
    # the same checker over half of a map of real structure: half of its variance
    smooth = torch.zeros(64, 64, dtype=torch.long)
    smooth[:, 32:] = 2
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    smooth[(ys - 20) ** 2 + (xs - 20) ** 2 < 150] = 1  # a disc
    assert _share(smooth) < 1e-4
    noise = torch.randint(0, 3, (256, 256), generator=torch.Generator().manual_seed(0))
    assert _share(noise) < 3 * 16 / 256**2  # noise has no period: about 16 / pixels
    # the checker over the right half of that map (a 32nd of the pixels) is most of what it adds
    mixed = smooth.clone()
    mixed[1::4, 34::4] = 0
    assert 0.03 < _share(mixed) < 0.2
    assert _share(mixed) > 500 * _share(smooth)
    assert _share(torch.ones(64, 64, dtype=torch.long)) == 0.0  # one class: no variance, no pattern
    assert math.isnan(periodic_share(torch.zeros(16, 3)))  # nothing measured


def test_periodic_share_is_the_spectral_power_at_the_4_pixel_period() -> None:
    generator = torch.Generator().manual_seed(1)
    classes = (
        torch.randint(0, 3, (16, 24), generator=generator).repeat_interleave(4, 0).repeat_interleave(4, 1)
    )
    classes[torch.rand(classes.shape, generator=generator) < 0.1] = 2
    classes[2::4, ::4] = 1
    periodic = total = 0.0
    for c in range(3):
        power = torch.fft.fft2((classes == c).double()).abs() ** 2
        power[0, 0] = 0  # the mean
        total += float(power.sum())
        periodic += float(power[:: classes.shape[0] // 4, :: classes.shape[1] // 4].sum())
    assert _share(classes) == pytest.approx(periodic / total, rel=1e-9)
    # scores give the map of their arg-max; maps in several updates pool their counts
    scores = torch.nn.functional.one_hot(classes, 3).permute(2, 0, 1).float()[None]
    metric = PeriodicShare(3)
    metric.update(scores)
    assert float(metric.compute()) == pytest.approx(periodic / total, rel=1e-9)
    assert _share(classes[:32], classes[32:]) == pytest.approx(_share(classes), rel=1e-9)
