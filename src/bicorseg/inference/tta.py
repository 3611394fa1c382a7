"""Test-time augmentation: run a model on flipped / rotated copies and average the probabilities.

Modes (SPEC 2, "Test-time augmentation"):

* ``none``: the image as it is (1 pass);
* ``lr``: the image, its horizontal flip and its vertical flip (3 passes);
* ``d4``: the 8 transforms of the dihedral group (4 rotations, each with and without a flip).

Each pass's logits are mapped back to the original orientation and turned into softmax
probabilities; the probabilities are averaged (averaging probabilities, not logits, keeps one
over-confident pass from dominating).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bicorseg.errors import ConfigError

TTA_MODES = ("none", "lr", "d4")

Transform = Callable[[torch.Tensor], torch.Tensor]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _rot(k: int, flip: bool) -> tuple[Transform, Transform]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))

    def inverse(y: torch.Tensor) -> torch.Tensor:
        y = torch.rot90(y, -k, dims=(-2, -1))
        return y.flip(-1) if flip else y

    return forward, inverse


def tta_transforms(mode: str) -> list[tuple[Transform, Transform]]:
    """(forward, inverse) pairs on ``... x H x W`` tensors for a TTA mode."""
    if mode == "none":
        return [(_identity, _identity)]
    if mode == "lr":
        return [(_identity, _identity), (_hflip, _hflip), (_vflip, _vflip)]
    if mode == "d4":
        return [_rot(k, flip) for flip in (False, True) for k in range(4)]
    raise ConfigError(f"--tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")


def with_tta(logits_fn: LogitsFn, mode: str = "none") -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a function ``B x bands x H x W -> B x N x H x W logits`` into one returning the
    TTA-averaged softmax probabilities (float32, same shape as the logits)."""
    transforms = tta_transforms(mode)

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        total = None
        for forward, inverse in transforms:
            probs = torch.softmax(inverse(logits_fn(forward(x))).float(), dim=1)
            total = probs if total is None else total.add_(probs)
        return total.div_(len(transforms)) if len(transforms) > 1 else total

    return probabilities
