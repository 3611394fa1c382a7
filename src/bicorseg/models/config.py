"""The network's hyper-parameters as data: :class:`ModelConfig` and F2CE's :class:`PixelSelection`.

Plain dataclasses without torch, so that configs are read, checked and described (``--help``)
without loading the network code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bicorseg.defaults import STRIDE
from bicorseg.errors import ConfigError
from bicorseg.typedconfig import build, nearest, to_plain

SELECTION_MODES = ("topk", "threshold", "percentile")
SUBPIXEL_INITS = ("independent", "tied")


@dataclass(frozen=True)
class PixelSelection:
    """How F2CE picks the pixels whose features describe a class (docs/METHOD.md, section 3).

    mode: ``topk`` keeps the k strongest pixels of each class map, with
        ``k = min(h*w, max(min_pixels, round(ratio * h*w)))``; ``threshold`` keeps pixels whose
        sigmoid heatmap is at least ``threshold``; ``percentile`` keeps pixels at or above the
        ``threshold`` quantile (in [0, 1]) of each map.
    """

    mode: str = "topk"
    ratio: float = 1.0
    min_pixels: int = 64
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ConfigError(f"must be one of {', '.join(SELECTION_MODES)}, got {self.mode!r}", key="mode")
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"the top-k ratio must be in (0, 1], got {self.ratio}", key="ratio")
        if self.min_pixels < 1:
            raise ConfigError(f"must be at least 1, got {self.min_pixels}", key="min_pixels")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"must be in [0, 1], got {self.threshold}", key="threshold")

    def num_pixels(self, total: int) -> int:
        return min(total, max(self.min_pixels, round(self.ratio * total)))


@dataclass
class ModelConfig:
    """Every hyper-parameter of a BiCoR-Seg network (stored in checkpoints).

    Attributes:
        num_classes: N, the number of classes.
        in_channels: number of input bands.
        backbone: ``convnext_{nano,tiny,small,base}``, ``resnet{18,34,50}`` or ``timm:<name>`` (extra ``timm``).
        pretrained: null (random weights), ``imagenet`` (downloaded once by torchvision or timm) or a
            local file of backbone weights.
        width: C, the embedding width (a multiple of 16).
        layers: L, the number of HBIS layers.
        topk_ratio: fraction of pixels F2CE keeps per class; one value or one per layer.
        min_pixels: floor on the number of kept pixels.
        selection: how F2CE selects pixels: ``topk``, ``threshold`` or ``percentile``.
        threshold: the fixed threshold or the percentile (in [0, 1]) for the non-top-k modes.
        lambda_film: lambda, the share of the FiLM-refined features in F_l.
        tau: temperature of the heatmap logits.
        inner_steps: repetitions of the layer's steps inside one layer.
        subpixel_init: how the channels that the head's two pixel shuffles spread over each 4 x 4
            block of output pixels start: ``tied`` (the default; an ICNR-like start: the 16
            channels of a block start equal, in the neck's fusion and the HBIS layers' FiLM maps, so
            an under-trained network paints no 4-pixel checker) or ``independent`` (each its own
            random draw, as the original; the published recipes keep it). Only the initialisation
            differs; the network and its checkpoints are the same.
        downsample: k, the working resolution: the network sees its input averaged over blocks of
            k x k pixels and its logits are resized back (bilinear) to the input's size, so 0.3 m
            imagery is classified from 0.6 m features with k = 2, at a quarter of the work. 1 (the
            default, the published network) reads every pixel. Inputs are padded to a multiple of
            32 k, and training crops must be one.
    """

    num_classes: int
    in_channels: int = 3
    backbone: str = "convnext_base"
    pretrained: str | None = None
    width: int = 256
    layers: int = 2
    topk_ratio: float | list[float] = 1.0
    min_pixels: int = 64
    selection: str = "topk"
    threshold: float = 0.5
    lambda_film: float = 0.5
    tau: float = 1.0
    inner_steps: int = 1
    subpixel_init: str = "tied"
    downsample: int = 1
    _ratios: list[float] = field(init=False, repr=False, compare=False)

    @property
    def stride(self) -> int:
        """Inputs are padded to a multiple of this: the backbone's stride at the working resolution."""
        return STRIDE * self.downsample

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(message, key=f"model.{key}")

        check(self.num_classes >= 2, "num_classes", f"at least 2 classes are needed, got {self.num_classes}")
        check(self.in_channels >= 1, "in_channels", f"must be at least 1, got {self.in_channels}")
        check(
            self.width >= 16 and self.width % 16 == 0, "width", f"must be a multiple of 16, got {self.width}"
        )
        check(self.layers >= 1, "layers", f"must be at least 1, got {self.layers}")
        check(self.inner_steps >= 1, "inner_steps", f"must be at least 1, got {self.inner_steps}")
        check(self.tau > 0, "tau", f"must be positive, got {self.tau}")
        check(0.0 <= self.lambda_film <= 1.0, "lambda_film", f"must be in [0, 1], got {self.lambda_film}")
        check(self.selection in SELECTION_MODES, "selection", f"must be one of {SELECTION_MODES}")
        check(
            self.subpixel_init in SUBPIXEL_INITS,
            "subpixel_init",
            f"must be one of {', '.join(SUBPIXEL_INITS)}, got {self.subpixel_init!r}",
        )
        check(self.downsample >= 1, "downsample", f"must be at least 1, got {self.downsample}")
        check(self.min_pixels >= 1, "min_pixels", f"must be at least 1, got {self.min_pixels}")
        check(0.0 <= self.threshold <= 1.0, "threshold", f"must be in [0, 1], got {self.threshold}")
        ratios = (
            self.topk_ratio if isinstance(self.topk_ratio, list | tuple) else [self.topk_ratio] * self.layers
        )
        check(len(ratios) == self.layers, "topk_ratio", f"give one value or {self.layers} (one per layer)")
        for ratio in ratios:
            check(0.0 < float(ratio) <= 1.0, "topk_ratio", f"must be in (0, 1], got {ratio}")
        self._ratios = [float(r) for r in ratios]
        if isinstance(self.topk_ratio, tuple):
            self.topk_ratio = list(self.topk_ratio)  # as configs and checkpoints hold it

    def selection_for_layer(self, layer: int) -> PixelSelection:
        return PixelSelection(self.selection, self._ratios[layer], self.min_pixels, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data (numpy's numbers and paths given to it as Python's and text)."""
        data = asdict(self)
        data.pop("_ratios")
        return to_plain(data)  # type: ignore[no-any-return]

    @classmethod
    def check_names(cls, names: Iterable[str]) -> None:
        """A :class:`ConfigError` for the first name that is not an option, naming the nearest one."""
        known = [f.name for f in fields(cls) if f.init]
        for name in sorted(set(names) - set(known)):
            guess = nearest(name, known)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise ConfigError(
                f"unknown model option; {hint}(options: {', '.join(known)})", key=f"model.{name}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The options from plain data (a checkpoint's or a pretrained folder's), each of its type."""
        cls.check_names(data)
        return build(cls, data, "model")  # type: ignore[no-any-return]
