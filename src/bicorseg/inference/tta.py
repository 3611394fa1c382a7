"""Test-time augmentation: run a model on flipped, rotated and rescaled copies and merge the results.

A TTA is a :class:`~bicorseg.spec.TTASpec`: the product of optional horizontal and vertical flips,
quarter turns and scale factors, merged by averaging either the logits (softmax afterwards) or the
softmax probabilities. The modes (:data:`TTA_MODES`, declared once in :mod:`bicorseg.spec`) and
their passes are listed in ``docs/evaluation.md`` (Test-time augmentation); ``paper`` reads the
publication's passes from the dataset facts (``DatasetSpec.paper_tta``), never from a name.

One pass, as the original's TTA library (ttach) does it: flip horizontally, flip vertically, turn,
then resize the input to ``int(H * s) x int(W * s)`` with bicubic interpolation
(``align_corners=False``); the logits are resized back to exactly ``H x W`` (bicubic,
``align_corners=False``; ttach computes ``int(h' / s)``, which is the same size wherever its
output can be averaged at all), turned back and flipped back.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from bicorseg.errors import ConfigError
from bicorseg.spec import TTA_MERGES, TTA_MODES, DatasetSpec, TTASpec

FIXED_MODES: dict[str, TTASpec] = {
    "none": TTASpec(),
    "lr": TTASpec(hflip=True, vflip=True),
    "d4": TTASpec(hflip=True, rotations=(0, 1, 2, 3)),
}
INTERPOLATION = "bicubic"  # input and output resizing of the scaled passes, as the original

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TTAPass:
    """One pass: flips, then ``quarter_turns`` counter-clockwise turns, then resizing by ``scale``."""

    hflip: bool = False
    vflip: bool = False
    quarter_turns: int = 0
    scale: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed input (``... x H x W``)."""
        if self.hflip:
            x = x.flip(-1)
        if self.vflip:
            x = x.flip(-2)
        if self.quarter_turns:
            x = torch.rot90(x, self.quarter_turns, dims=(-2, -1))
        if self.scale != 1.0:
            height, width = x.shape[-2:]
            size = (max(1, int(height * self.scale)), max(1, int(width * self.scale)))
            x = F.interpolate(x, size=size, mode=INTERPOLATION, align_corners=False)
        return x

    def inverse(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Outputs of the transformed input mapped back to the original ``size`` and orientation."""
        if self.scale != 1.0:
            turned = size[::-1] if self.quarter_turns % 2 else size
            y = F.interpolate(y, size=tuple(turned), mode=INTERPOLATION, align_corners=False)
        if self.quarter_turns:
            y = torch.rot90(y, -self.quarter_turns, dims=(-2, -1))
        if self.vflip:
            y = y.flip(-2)
        if self.hflip:
            y = y.flip(-1)
        return y

    def to_dict(self) -> dict[str, object]:
        return {
            "hflip": self.hflip,
            "vflip": self.vflip,
            "rot90": 90 * self.quarter_turns,
            "scale": self.scale,
        }


def check_tta_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`TTA_MODES`, else a :class:`ConfigError`."""
    if mode not in TTA_MODES:
        raise ConfigError(f"must be one of {', '.join(TTA_MODES)}, got {mode!r}", key="tta")
    return mode


def parse_scales(text: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """Scale factors from ``"0.75,1,1.25"`` (or a sequence); None stays None."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        scales = tuple(float(s) for s in items if s != "")
    except ValueError:
        raise ConfigError(
            f"give comma-separated numbers such as 0.75,1,1.25, got {text!r}", key="tta_scales"
        ) from None
    if not scales or any(not 0 < s <= 8 for s in scales) or len(set(scales)) != len(scales):
        raise ConfigError(f"give distinct factors in (0, 8], got {text!r}", key="tta_scales")
    return scales


def resolve_tta(
    mode: str | TTASpec = "none",
    dataset: DatasetSpec | Sequence[DatasetSpec | None] | None = None,
    scales: Sequence[float] | None = None,
    merge: str | None = None,
) -> TTASpec:
    """The :class:`TTASpec` of a mode.

    ``paper`` reads ``paper_tta`` from the first of ``dataset`` (a spec or several, e.g. the evaluated
    dataset's and the checkpoint's) that declares one; its passes and merge are fixed, so ``scales``
    and ``merge`` must be left out. Other modes take optional ``scales`` and ``merge`` (default
    ``probs``).
    """
    if isinstance(mode, TTASpec):
        return mode
    check_tta_mode(mode)
    if merge is not None and merge not in TTA_MERGES:
        raise ConfigError(f"must be one of {', '.join(TTA_MERGES)}, got {merge!r}", key="tta_merge")
    if mode == "paper":
        if scales is not None or merge is not None:
            raise ConfigError(
                "'paper' fixes its passes and merge: leave out `tta_scales` and `tta_merge` "
                "(or build the same product from d4 or lr with them)",
                key="tta",
            )
        source = _paper_source(dataset)
        if source is not None:
            return source.paper_tta
        named = [s.name for s in _specs(dataset) if s is not None]
        why = "the model carries no dataset facts, so the publication's passes are unknown"
        if named:
            why = f"dataset {named[0]!r} declares no test-time augmentation of the original publication"
        raise ConfigError(f"'paper': {why} (vaihingen, potsdam and loveda do)", key="tta")
    spec = FIXED_MODES[mode]
    if scales is not None:
        spec = replace(spec, scales=parse_scales(scales))
    if merge is not None:
        spec = replace(spec, merge=merge)
    return spec


def _specs(dataset: DatasetSpec | Sequence[DatasetSpec | None] | None) -> list[DatasetSpec | None]:
    return list(dataset) if isinstance(dataset, Sequence) else [dataset]


def _paper_source(dataset: DatasetSpec | Sequence[DatasetSpec | None] | None) -> DatasetSpec | None:
    """The first of the given specs that declares the publication's TTA."""
    return next((s for s in _specs(dataset) if s is not None and s.paper_tta is not None), None)


def tta_name(mode: str, dataset: DatasetSpec | Sequence[DatasetSpec | None] | None = None) -> str:
    """The mode for reports: ``paper`` names the dataset whose passes it took, e.g. ``paper (vaihingen)``."""
    source = _paper_source(dataset) if mode == "paper" else None
    return f"paper ({source.name})" if source is not None else mode


def tta_passes(tta: str | TTASpec) -> list[TTAPass]:
    """Every pass of a TTA, in the original library's order (flips outermost, scales innermost)."""
    spec = resolve_tta(tta)
    return [
        TTAPass(h, v, k, s)
        for h, v, k, s in itertools.product(
            (False, True) if spec.hflip else (False,),
            (False, True) if spec.vflip else (False,),
            spec.rotations,
            spec.scales,
        )
    ]


def _numbers(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def describe_tta(tta: str | TTASpec) -> str:
    """The passes in words, e.g. ``horizontal flip x vertical flip = 4 passes, probabilities averaged``."""
    spec = resolve_tta(tta)
    factors = []
    if spec.hflip:
        factors.append("horizontal flip")
    if spec.vflip:
        factors.append("vertical flip")
    if spec.rotations != (0,):
        factors.append(f"rot90 {_numbers([90 * k for k in spec.rotations])}")
    if spec.scales != (1.0,):
        factors.append(f"scales {_numbers(spec.scales)} ({INTERPOLATION})")
    count = spec.num_passes
    if count == 1:
        return "1 pass (the image as it is)" if not factors else f"{factors[0]} = 1 pass"
    merged = "logits averaged, softmax after" if spec.merge == "logits" else "probabilities averaged"
    return f"{' x '.join(factors)} = {count} passes, {merged}"


def is_identity(tta: str | TTASpec) -> bool:
    """True when the TTA is the single untransformed pass."""
    passes = tta_passes(tta)
    return len(passes) == 1 and passes[0] == TTAPass()


def with_tta(
    logits_fn: LogitsFn, tta: str | TTASpec = "none", *, disagreement: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a function ``B x bands x H x W -> B x N x H x W logits`` into one returning the merged
    softmax probabilities of every pass (float32, same shape as the logits).

    ``tta`` is a mode other than ``paper`` or a :class:`TTASpec` (from :func:`resolve_tta`). With
    ``disagreement`` the result has one more channel: per pixel, the fraction of passes whose
    arg-max differs from the arg-max of the merged probabilities (0 with a single pass).
    """
    spec = resolve_tta(tta)
    passes = tta_passes(spec)
    probs = spec.merge == "probs"

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        total = None
        votes = []  # each pass's arg-max, kept only for the disagreement
        for one in passes:
            out = one.inverse(logits_fn(one.forward(x)), size).float()
            if disagreement:
                votes.append(out.argmax(dim=1))
            if probs:
                out = torch.softmax(out, dim=1)
            total = out if total is None else total.add_(out)
        if len(passes) > 1:
            total = total.div_(len(passes))
        merged = total if probs else torch.softmax(total, dim=1)
        if not disagreement:
            return merged
        best = merged.argmax(dim=1)
        differ = torch.zeros_like(best, dtype=torch.float32)
        for vote in votes:
            differ += (vote != best).float()
        return torch.cat([merged, (differ / len(passes))[:, None]], dim=1)

    return probabilities
