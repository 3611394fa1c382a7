"""The tied (ICNR-like) start of the channels the head's pixel shuffles spread over 4 x 4 blocks."""

from __future__ import annotations

import pytest
import torch

from bicorseg.errors import ConfigError
from bicorseg.metrics import PeriodicShare
from bicorseg.models import BiCoRSeg
from tests.helpers.models import tiny_config


def _blocks(logits: torch.Tensor) -> torch.Tensor:
    """B x N x H/4 x W/4 x 16: the logits of each 4 x 4 block of output pixels."""
    b, n, h, w = logits.shape
    return logits.view(b, n, h // 4, 4, w // 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(b, n, h // 4, w // 4, 16)


def _model(init: str, seed: int = 0) -> BiCoRSeg:
    torch.manual_seed(seed)
    return BiCoRSeg(tiny_config(width=64, num_classes=5, subpixel_init=init)).eval()


def test_tied_start_paints_each_block_in_one_class() -> None:
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        tied, independent = _model("tied")(x), _model("independent")(x)
    for logits in (tied, independent):
        assert logits.shape == (2, 5, 64, 96) and float(logits.std()) > 0
    # tied: every logit is constant over each block of 4 x 4 output pixels (to float32 rounding) ...
    spread = _blocks(tied) - _blocks(tied).mean(dim=-1, keepdim=True)
    assert float(spread.abs().max()) <= 1e-5 * float(tied.abs().max())
    # ... while the independent draws differ across a block by about as much as across the image
    spread = _blocks(independent) - _blocks(independent).mean(dim=-1, keepdim=True)
    assert float(spread.std()) > 0.3 * float(independent.std())
    # so the class map of the tied start has no 4-pixel pattern at all
    pattern = PeriodicShare(5)
    pattern.update(tied)
    assert float(pattern.compute()) < 0.01


def test_tied_start_only_ties_the_rows_that_feed_the_shuffles() -> None:
    tied, independent = _model("tied").state_dict(), _model("independent").state_dict()
    tied_names = {"neck.fuse.weight"} | {
        f"layers.{i}.{film}.{p}" for i in range(2) for film in ("gamma", "beta") for p in ("weight", "bias")
    }
    for name, value in tied.items():
        if name in tied_names:
            rows = value.reshape(value.shape[0], -1)
            assert torch.equal(rows, rows[::16].repeat_interleave(16, dim=0)), name
            assert torch.equal(rows[::16], independent[name].reshape(rows.shape)[::16]), name  # default draws
            assert not torch.equal(value, independent[name]), name
        else:  # the same draws as the original initialisation everywhere else
            assert torch.equal(value, independent[name]), name


def test_unknown_subpixel_init_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^model\.subpixel_init: must be one of independent, tied"):
        tiny_config(subpixel_init="icnr")
