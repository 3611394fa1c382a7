"""Every term of the objective against hand computations and naive loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bicorseg.errors import ConfigError
from bicorseg.losses import (
    BiCoRSegLoss,
    LossConfig,
    dice_loss,
    fisher_discriminant,
    pool_labels,
    soft_cross_entropy,
)
from bicorseg.models import TrainOutput


def naive_soft_ce(logits, target, ignore, eps):
    b, n, h, w = logits.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if target[i, y, x] == ignore:
                    continue
                logp = torch.log_softmax(logits[i, :, y, x], 0)
                total += (1 - eps) * -logp[target[i, y, x]] + eps / n * -logp.sum()
    return total / (b * h * w)


def naive_dice(logits, target, ignore, smooth=0.05, eps=1e-7):
    n = logits.shape[1]
    probs = torch.softmax(logits, 1)
    valid = target != ignore
    losses = []
    for c in range(n):
        p = probs[:, c][valid]
        t = (target[valid] == c).to(logits.dtype)
        if t.sum() == 0:
            losses.append(torch.zeros((), dtype=logits.dtype))
            continue
        score = (2 * (p * t).sum() + smooth) / max((p + t).sum() + smooth, eps)
        losses.append(1 - score)
    return torch.stack(losses).mean()


def naive_fisher(emb):
    b, n, _ = emb.shape
    means = [emb[:, k].mean(0) for k in range(n)]
    within = sum(((emb[i, k] - means[k]) ** 2).sum() for i in range(b) for k in range(n)) / (b * n)
    pairs = [((means[a] - means[d]) ** 2).sum() for a in range(n) for d in range(a + 1, n)]
    between = max(sum(pairs) / len(pairs), torch.tensor(1e-4, dtype=emb.dtype))
    return within / (between + 1e-6)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("classes", [2, 5])
def test_soft_ce_counts_ignored_pixels_in_the_mean(batch, classes) -> None:
    logits = torch.randn(batch, classes, 5, 6, dtype=torch.float64)
    target = torch.randint(0, classes, (batch, 5, 6))
    target[:, 0] = classes
    ours = soft_cross_entropy(logits, target, ignore_index=classes, smoothing=0.05)
    torch.testing.assert_close(ours, naive_soft_ce(logits, target, classes, 0.05))
    # torch divides by the non-ignored count instead
    valid = (target != classes).sum()
    torch_mean = F.cross_entropy(logits, target, ignore_index=classes, label_smoothing=0.05)
    torch.testing.assert_close(ours, torch_mean * valid / target.numel())


def test_soft_ce_by_hand() -> None:
    # one pixel, two classes, logits (0, log 3): p = (1/4, 3/4), target 1
    logits = torch.tensor([0.0, math.log(3)], dtype=torch.float64).view(1, 2, 1, 1)
    value = soft_cross_entropy(logits, torch.tensor([[[1]]]), ignore_index=2, smoothing=0.1)
    expected = 0.9 * -math.log(0.75) + 0.05 * (-math.log(0.25) - math.log(0.75))
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("batch", [1, 2])
def test_dice_matches_naive_reference_with_absent_class_and_ignore(batch) -> None:
    logits = torch.randn(batch, 4, 6, 6, dtype=torch.float64)
    target = torch.randint(0, 3, (batch, 6, 6))  # class 3 absent
    target[:, :2, :2] = 4
    torch.testing.assert_close(dice_loss(logits, target, ignore_index=4), naive_dice(logits, target, 4))


def test_dice_by_hand_for_two_classes() -> None:
    # two pixels, perfectly confident and correct for class 0; class 1 absent -> 0
    logits = torch.tensor([[[[50.0, 50.0]], [[-50.0, -50.0]]]], dtype=torch.float64)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    value = dice_loss(logits, target, ignore_index=2, smooth=0.05)
    score0 = (2 * 2 + 0.05) / (4 + 0.05)
    assert value.item() == pytest.approx((1 - score0) / 2, abs=1e-12)


def test_dice_ignores_pixels_completely() -> None:
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 4, 4))
    changed = logits.clone()
    target[0, 0, 0] = 3
    changed[0, :, 0, 0] = torch.tensor([9.0, -9.0, 3.0])
    torch.testing.assert_close(dice_loss(logits, target, 3), dice_loss(changed, target, 3))


@pytest.mark.parametrize("shape", [(1, 2, 4), (2, 2, 8), (3, 5, 16)])
def test_fisher_matches_naive_reference(shape) -> None:
    emb = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(fisher_discriminant(emb), naive_fisher(emb))


def test_fisher_between_class_scatter_is_clamped() -> None:
    emb = torch.ones(2, 3, 4, dtype=torch.float64)
    emb[1] += 0.5  # within-class scatter only, all class means equal
    # Sw = 4 dims * 0.25**2 = 0.25; Sb = 0 -> 1e-4
    assert fisher_discriminant(emb).item() == pytest.approx(0.25 / (1e-4 + 1e-6), rel=1e-9)


def _fake_output(batch=2, classes=3, layers=2, size=8, width=16) -> TrainOutput:
    g = torch.Generator().manual_seed(1)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    return TrainOutput(
        logits=r(batch, classes, size, size),
        aux_logits=r(batch, classes, size, size),
        heatmap_logits=[r(batch, classes, size // 4, size // 4) for _ in range(layers)],
        class_embeddings=[r(batch, classes, width) for _ in range(layers)],
    )


@pytest.mark.parametrize("batch", [1, 2])
def test_total_is_the_weighted_sum_of_the_terms(batch) -> None:
    out = _fake_output(batch=batch)
    labels = torch.randint(0, 3, (batch, 8, 8))
    labels[:, -1] = 3
    config = LossConfig(
        ignore_index=3,
        heatmap_layer_weights=[1.0, 0.5],
        fisher_layer_weights=[2.0, 1.0],
        final_fisher_weight=1.0,
    )
    terms = BiCoRSegLoss(config)(out, labels)
    assert set(terms) == {
        "main_softce", "main_dice", "aux_softce", "heatmap_0", "heatmap_1",
        "fisher_0", "fisher_1", "fisher_final_extra", "total",
    }  # fmt: skip
    for layer in range(2):
        resized = F.interpolate(out.heatmap_logits[layer], size=(8, 8), mode="bilinear", align_corners=False)
        expected = naive_soft_ce(resized, labels, 3, 0.05) + naive_dice(resized, labels, 3)
        torch.testing.assert_close(terms[f"heatmap_{layer}"], expected)
        torch.testing.assert_close(terms[f"fisher_{layer}"], naive_fisher(out.class_embeddings[layer]))
    expected_total = (
        terms["main_softce"]
        + terms["main_dice"]
        + 0.4 * terms["aux_softce"]
        + 0.1 * (terms["heatmap_0"] + 0.5 * terms["heatmap_1"])
        + 0.1 * (2.0 * terms["fisher_0"] + terms["fisher_1"])
        + 1.0 * terms["fisher_1"]
    )
    torch.testing.assert_close(terms["total"], expected_total)
    torch.testing.assert_close(terms["fisher_final_extra"], terms["fisher_1"])


def test_layer_weights_must_match_the_layer_count() -> None:
    loss = BiCoRSegLoss(LossConfig(ignore_index=3, fisher_layer_weights=[1.0]))
    with pytest.raises(ConfigError, match="fisher_layer_weights: 1 weights given for 2 HBIS layers"):
        loss(_fake_output(), torch.zeros(2, 8, 8, dtype=torch.long))


def test_negative_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"loss\.aux_weight"):
        LossConfig(ignore_index=3, aux_weight=-1)


def test_pool_labels_takes_each_blocks_majority() -> None:
    """Majority of the labelled pixels, the lowest class on a tie, ignored only where all are."""
    labels = torch.tensor([[[0, 0, 1, 9], [0, 1, 1, 9], [9, 9, 2, 3], [9, 9, 3, 2]]])
    assert pool_labels(labels, 2, ignore_index=9).tolist() == [[[0, 1], [9, 2]]]
    assert pool_labels(labels, 1, ignore_index=9) is labels


def test_pool_labels_matches_a_count_per_block() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (2, 12, 9))
    labels[0, :6, :6] = 255
    labels[1, :3, :3] = torch.tensor([[255, 4, 4], [1, 1, 255], [255, 255, 255]])  # 1 and 4 tie
    pooled = pool_labels(labels, 3, ignore_index=255)
    assert pooled.shape == (2, 4, 3) and pooled[1, 0, 0] == 1 and (pooled[0, :2, :2] == 255).all()
    for b, i, j in torch.cartesian_prod(torch.arange(2), torch.arange(4), torch.arange(3)).tolist():
        block = labels[b, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].flatten()
        block = block[block != 255]
        expected = 255 if not len(block) else int(torch.bincount(block).argmax())  # argmax: the first maximum
        assert pooled[b, i, j] == expected
