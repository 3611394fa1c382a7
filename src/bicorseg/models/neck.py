"""The neck: four stage outputs -> one feature map F_0 (B x C x H/4 x W/4), computed without the 4C tensor.

Parameters are those of the published neck (a per-stage linear projection with bias, then a 1x1
convolution without bias over the stage-4, 3, 2, 1 concatenation). Because the projection and the
1x1 convolution are per-pixel linear maps and bilinear resizing is linear and keeps constants,
``F_0 = sum_i resize(W_i x_i + b_i)`` with ``W_i`` = (block i of the 1x1 convolution) @ (projection i),
applied at each stage's own, lower resolution. Same numbers, no 4C x h x w tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FusedNeck(nn.Module):
    """Projects each stage to ``width`` channels, resizes to stride 4 and fuses (see module docstring)."""

    def __init__(self, stage_channels: Sequence[int], width: int) -> None:
        super().__init__()
        self.width = width
        self.proj = nn.ModuleList(nn.Linear(c, width) for c in stage_channels)
        # Input channel blocks are ordered stage 4, 3, 2, 1 (as the published concatenation).
        self.fuse = nn.Conv2d(len(stage_channels) * width, width, kernel_size=1, bias=False)

    def fused_weights(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (C x c_i) and bias (C) of the single linear map stage ``stage`` contributes."""
        block = len(self.proj) - 1 - stage
        fuse_block = self.fuse.weight[:, block * self.width : (block + 1) * self.width, 0, 0]
        proj = self.proj[stage]
        assert isinstance(proj, nn.Linear)
        return fuse_block @ proj.weight, fuse_block @ proj.bias

    def forward(self, stages: Sequence[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        """``size`` is the working resolution (H/4, W/4); by default the first stage's size."""
        size = size or (int(stages[0].shape[-2]), int(stages[0].shape[-1]))
        out: torch.Tensor | None = None
        for index, x in enumerate(stages):
            weight, bias = self.fused_weights(index)
            y = F.conv2d(x, weight[:, :, None, None].to(x.dtype), bias.to(x.dtype))
            if tuple(y.shape[-2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        if out is None:
            raise ValueError("the neck needs at least one stage")
        return out
