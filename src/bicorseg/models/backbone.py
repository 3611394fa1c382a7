"""Backbones that return their four stage outputs by running the stages directly (no forward hooks).

Supported names:

* ``convnext_tiny``, ``convnext_small``, ``convnext_base``: torchvision's ConvNeXt.
* ``resnet18``, ``resnet34``, ``resnet50``: torchvision's ResNets (batch norm). From random weights
  the last batch norm of each residual block starts at zero (``zero_init_residual``), so every block
  starts as the identity: they learn fast from few images, the CPU recipes' backbone.
* ``convnext_nano``: torchvision's ConvNeXt class with a small block setting (channels 32-256,
  depths 1/1/3/1), for tests, the CPU demo and quick experiments. It has no pretrained weights.
* ``convnext_atto``, ``convnext_femto``, ``convnext_pico``: timm's smallest ConvNeXts (3.4 to 8.5
  million weights, ImageNet-1k), short for ``timm:convnext_atto`` etc. (optional extra ``timm``).
* ``timm:<model name>``: any timm model that supports ``features_only`` (optional extra ``timm``),
  e.g. ``timm:convnext_nano`` (timm's nano, not bicorseg's).

``pretrained="imagenet"`` takes the weights from the cache of the library that publishes them
(:mod:`bicorseg.pretrained`: downloaded once, or imported by hand on machines without network
access); a file path loads that file. Any input band count is supported: the first convolution is
rebuilt for it, and pretrained RGB weights are carried over as described in
:func:`adapt_first_conv_weight`, for torchvision's and timm's backbones alike.

The torchvision ConvNeXt blocks run a faster forward for float32 inference on the CPU
(:class:`InferenceCNBlock`); parameters, state dict keys and every other path are torchvision's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import convnext as tv_convnext

from bicorseg.errors import ConfigError, first_line, require_extra
from bicorseg.pretrained import (
    TIMM_SHORT_NAMES,
    TORCHVISION_CONVNEXT_NAMES,
    TORCHVISION_RESNET_NAMES,
    WeightsSource,
    imagenet_weights,
    read_weights,
    reference_shapes,
    weights_source,
)

TORCHVISION_CONVNEXTS = {
    name: getattr(tv_convnext, name) for name in TORCHVISION_CONVNEXT_NAMES
}  # name -> builder
# (input channels, output channels, depth) per stage; output None marks the last stage.
_NANO_BLOCKS = ((32, 64, 1), (64, 128, 1), (128, 256, 3), (256, None, 1))
BACKBONE_NAMES = (
    *TORCHVISION_CONVNEXTS,
    *TORCHVISION_RESNET_NAMES,
    "convnext_nano",
    *TIMM_SHORT_NAMES,
    "timm:<name>",
)


# oneDNN's fused Linear + GELU (the kernel torch.compile uses on CPUs); absent from builds without oneDNN
_LINEAR_POINTWISE = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


class InferenceCNBlock(tv_convnext.CNBlock):  # type: ignore[misc]  # torchvision has no type information
    """torchvision's ConvNeXt block with a faster forward for float32 CPU inference (same parameters).

    Without gradients, in evaluation mode, on a float32 CPU tensor outside autocast, the block's
    first Linear and its GELU run as one oneDNN call (one pass over the 4C-channel tensor instead
    of three: bias, GELU, read back), and the second Linear takes the layer scale, its bias and the
    residual into one in-place matrix product:
    ``x + s * (W2 h + b2) = (x + s * b2) + h (s W2)^T``. Same function, float32 rounding aside
    (about 1e-6 relative). With the channels-last weights of :class:`ConvNeXtStages`, 1.1x less
    CPU time for the whole model at 1024 px (``benchmarks/fp32_layout.py``). Otherwise (training,
    gradients, autocast, float64, GPU) it is torchvision's forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.training
            or torch.is_grad_enabled()
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
            or _LINEAR_POINTWISE is None
            or not torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        ):
            plain: torch.Tensor = super().forward(x)
            return plain
        conv, _, norm, linear1, _, linear2, _ = self.block
        b, c, h, w = x.shape
        scale = self.layer_scale.view(-1)
        y = F.layer_norm(conv(x).permute(0, 2, 3, 1), (c,), norm.weight, norm.bias, norm.eps)
        y = _LINEAR_POINTWISE(y, linear1.weight, linear1.bias, "gelu", [], "none")
        out = (x.permute(0, 2, 3, 1).reshape(-1, c) + linear2.bias * scale).addmm_(
            y.reshape(-1, y.shape[-1]), (linear2.weight * scale[:, None]).t()
        )
        fused: torch.Tensor = out.view(b, h, w, c).permute(0, 3, 1, 2)  # channels-last, as torchvision's
        return fused


def adapt_first_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Carry RGB-pretrained first-layer weights (out, 3, k, k) over to ``in_channels`` bands.

    * 3 bands: unchanged.
    * fewer than 3 bands: every band gets the sum of the RGB kernels divided by the band count, so a
      grey image with the statistics of an RGB image produces the same activations.
    * more than 3 bands: the first three copy RGB, every extra band starts from the mean RGB kernel,
      and all kernels are scaled by ``3 / in_channels`` so that activations keep their magnitude.
    """
    out_channels, rgb, *kernel = weight.shape
    if in_channels == rgb:
        return weight.clone()
    if in_channels < rgb:
        return (
            (weight.sum(dim=1, keepdim=True) / in_channels).expand(out_channels, in_channels, *kernel).clone()
        )
    extra = weight.mean(dim=1, keepdim=True).expand(out_channels, in_channels - rgb, *kernel)
    return torch.cat([weight, extra], dim=1) * (rgb / in_channels)


def _pretrained_state(name: str, pretrained: str) -> dict[str, torch.Tensor]:
    """torchvision's weights of network ``name``, ImageNet's or a file's, checked: every key is the
    network's, with its shape, and only the classifier's may be absent (``strict=False`` loads them)."""
    return (
        imagenet_weights(name) if pretrained == "imagenet" else read_weights(pretrained, weights_source(name))
    )


class ConvNeXtStages(nn.Module):
    """A torchvision ConvNeXt reduced to its ``features``; returns the outputs of its four stages."""

    def __init__(
        self,
        name: str = "convnext_base",
        in_channels: int = 3,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if name == "convnext_nano":
            if pretrained:
                raise ConfigError(
                    "backbone 'convnext_nano' has no pretrained weights: set pretrained to null"
                )
            blocks = [tv_convnext.CNBlockConfig(i, o, d) for i, o, d in _NANO_BLOCKS]
            network = tv_convnext.ConvNeXt(blocks, stochastic_depth_prob=0.0)
        elif name in TORCHVISION_CONVNEXTS:
            network = TORCHVISION_CONVNEXTS[name](weights=None)
            if pretrained:
                network.load_state_dict(_pretrained_state(name, pretrained), strict=False)
        else:
            raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        self.features = network.features
        for module in self.features.modules():
            if type(module) is tv_convnext.CNBlock:
                module.__class__ = InferenceCNBlock
        # convolution weights channels-last: oneDNN then keeps the activations channels-last too, so
        # the blocks' permutes to and from B x H x W x C are views, not copies
        self.features.to(memory_format=torch.channels_last)
        stem = self.features[0][0]
        if in_channels != stem.in_channels:
            new_stem = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride)
            with torch.no_grad():
                new_stem.weight.copy_(adapt_first_conv_weight(stem.weight, in_channels))
                assert new_stem.bias is not None  # nn.Conv2d's default bias=True
                new_stem.bias.copy_(stem.bias)
            self.features[0][0] = new_stem.to(memory_format=torch.channels_last)
        self.channels: tuple[int, ...] = tuple(
            stage[-1].block[0].in_channels for stage in (self.features[i] for i in (1, 3, 5, 7))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index % 2 == 1:  # features = stem, stage1, down1, stage2, down2, stage3, down3, stage4
                stages.append(x)
        return stages


class ResNetStages(nn.Module):
    """A torchvision ResNet without its pooling and classifier; returns the outputs of its four stages.

    Pretrained weights (``"imagenet"``, or a file of torchvision's weights for this network) are
    checked by :func:`bicorseg.pretrained.read_weights`; the first convolution is adapted to the band
    count by :func:`adapt_first_conv_weight`.
    """

    def __init__(self, name: str, in_channels: int = 3, pretrained: str | None = None) -> None:
        super().__init__()
        from torchvision.models import get_model

        network = get_model(name, weights=None, zero_init_residual=not pretrained)
        if pretrained:
            network.load_state_dict(_pretrained_state(name, pretrained), strict=False)
        stem = network.conv1
        if in_channels != stem.in_channels:
            network.conv1 = nn.Conv2d(
                in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
            )
            with torch.no_grad():
                network.conv1.weight.copy_(adapt_first_conv_weight(stem.weight, in_channels))
        self.stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
        self.stages = nn.ModuleList([network.layer1, network.layer2, network.layer3, network.layer4])
        expansion = type(network.layer1[0]).expansion  # 1 for resnet18/34's blocks, 4 for resnet50's
        self.channels: tuple[int, ...] = tuple(64 * 2**i * expansion for i in range(4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        return stages


class TimmStages(nn.Module):
    """Any timm model with ``features_only``; returns its last four feature maps.

    Pretrained weights (``"imagenet"``, or a file of the model's weights as timm publishes them:
    safetensors or a torch state dict) are checked by :func:`bicorseg.pretrained.read_weights` and
    handed to timm as a state dict, the first convolution adapted to the band count by
    :func:`adapt_first_conv_weight`.
    """

    def __init__(
        self, name: str, in_channels: int = 3, pretrained: str | None = None, display_name: str | None = None
    ) -> None:
        super().__init__()
        display_name = display_name or f"timm:{name}"
        (timm,) = require_extra("timm", ("timm",), f"backbone {display_name!r}")
        options: dict[str, Any] = {}
        if pretrained:
            if pretrained == "imagenet":
                source = weights_source(display_name)
                state = imagenet_weights(display_name)
            else:
                source = WeightsSource(display_name, "timm", name, pretrained)
                state = read_weights(pretrained, source)
            options = _timm_pretrained_options(timm, source, state, in_channels)
        try:
            body: Any = timm.create_model(  # timm has no type information
                name, features_only=True, in_chans=in_channels, **options
            )
        except RuntimeError as error:
            raise ConfigError(f"backbone {display_name!r}: {first_line(error)}") from error
        body.pretrained_cfg.pop("state_dict", None)  # timm keeps the overlay: the weights would stay twice
        self.body = body
        channels = [int(c) for c in body.feature_info.channels()]
        if len(channels) < 4:
            raise ConfigError(f"backbone {display_name!r} has {len(channels)} feature levels; 4 are needed")
        self.channels: tuple[int, ...] = tuple(channels[-4:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))[-4:]


def _timm_pretrained_options(
    timm: Any, source: WeightsSource, state: dict[str, torch.Tensor], in_channels: int
) -> dict[str, Any]:
    """The ``create_model`` options that load ``state`` (timm's layout, checked) into a timm model.

    The first convolution is adapted here, as for torchvision's backbones; the classifier head, which
    a file may leave out, is filled with zeros (timm drops it from a ``features_only`` model) so that
    timm reads the state dict as its own layout.
    """
    shapes, head = reference_shapes(source)
    state = dict(state)
    for key, shape in shapes.items():
        if key.startswith(head) and key not in state:
            state[key] = torch.zeros(shape)
    config = timm.models.get_pretrained_cfg(source.model)
    stems = config.first_conv if config is not None else None
    for stem in (stems,) if isinstance(stems, str) else stems or ():
        weight = state.get(f"{stem}.weight")
        if weight is not None and weight.ndim == 4 and weight.shape[1] == 3 and in_channels != 3:
            state[f"{stem}.weight"] = adapt_first_conv_weight(weight, in_channels)
    return {
        "pretrained": True,
        # the input size declares the band count the weights now have, so timm loads them unchanged
        "pretrained_cfg_overlay": {"state_dict": state, "input_size": (in_channels, 224, 224)},
    }


def build_backbone(
    name: str, in_channels: int = 3, pretrained: str | None = None
) -> ConvNeXtStages | ResNetStages | TimmStages:
    """Backbone by name (see module docstring); ``pretrained`` is None, ``"imagenet"`` or a file path."""
    if name in TORCHVISION_RESNET_NAMES:
        return ResNetStages(name, in_channels, pretrained)
    if name.startswith("timm:"):
        return TimmStages(name.removeprefix("timm:"), in_channels, pretrained)
    if name in TIMM_SHORT_NAMES:
        return TimmStages(name, in_channels, pretrained, display_name=name)
    return ConvNeXtStages(name, in_channels, pretrained)
