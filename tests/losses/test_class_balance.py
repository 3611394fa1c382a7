"""loss.class_balance: the soft cross-entropy terms weigh each pixel by the rarity of its class."""

from __future__ import annotations

import pytest
import torch

from bicorseg.errors import ConfigError
from bicorseg.losses import BiCoRSegLoss, LossConfig, soft_cross_entropy
from tests.losses.test_losses import _fake_output, naive_soft_ce


def test_class_weights_scale_each_pixel_by_its_true_class() -> None:
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 5, 6))
    target[:, 0] = 3
    weights = torch.tensor([0.5, 2.0, 1.0])
    ours = soft_cross_entropy(logits, target, 3, 0.05, weights)
    by_class = sum(
        weights[c].item() * naive_soft_ce(logits, torch.where(target == c, target, 3), 3, 0.05)
        for c in range(3)
    )
    torch.testing.assert_close(ours, by_class)


def test_balance_weighs_classes_by_their_share_seen_in_training() -> None:
    loss = BiCoRSegLoss(LossConfig(ignore_index=3, class_balance=0.5))
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, :, :1] = 1  # 10 % of the labelled pixels class 1, 80 % class 0, class 2 absent
    labels[0, :, -1] = 3  # ignored: not counted
    weights = loss.class_weights(labels, 3)
    assert weights is not None
    share = torch.tensor([80 / 90, 10 / 90, 1e-3])  # an absent class counts as 0.1 %
    expected = share**-0.5 / ((torch.tensor([80 / 90, 10 / 90, 0.0]) * share**-0.5).sum())
    torch.testing.assert_close(weights, expected.float())
    # the average labelled pixel weighs 1, and the rare class 8 ** 0.5 times the common one
    assert float(weights[0] * 80 / 90 + weights[1] * 10 / 90) == pytest.approx(1.0)
    assert float(weights[1] / weights[0]) == pytest.approx(8**0.5)
    # the counts accumulate over training batches, not over evaluation ones
    loss.class_weights(labels, 3)
    assert loss.class_pixels is not None and loss.class_pixels.tolist() == [160, 20, 0]
    loss.eval()
    loss.class_weights(torch.ones(1, 10, 10, dtype=torch.long), 3)
    assert loss.class_pixels.tolist() == [160, 20, 0]


def test_balance_zero_is_the_published_objective() -> None:
    out, labels = _fake_output(), torch.randint(0, 4, (2, 8, 8))
    plain = BiCoRSegLoss(LossConfig(ignore_index=3))(out, labels)
    balanced = BiCoRSegLoss(LossConfig(ignore_index=3, class_balance=0.5))(out, labels)
    assert BiCoRSegLoss(LossConfig(ignore_index=3)).class_weights(labels, 3) is None
    for term in ("main_softce", "aux_softce", "heatmap_0"):
        assert not torch.allclose(plain[term], balanced[term]), term
    for term in ("main_dice", "fisher_0"):
        torch.testing.assert_close(plain[term], balanced[term])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_balance_outside_zero_to_one_is_refused(alpha: float) -> None:
    with pytest.raises(ConfigError, match=r"loss\.class_balance: must be in \[0, 1\]"):
        LossConfig(ignore_index=3, class_balance=alpha)
