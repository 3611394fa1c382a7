"""The BiCoR-Seg network: backbone stages -> fused neck -> HBIS layers -> upsampling head (docs/METHOD.md, sections 1-4).

A plain ``nn.Module``:

* ``model(x)`` returns the logits (B x N x H x W) in training and evaluation mode alike, so the model
  drops into any training loop that feeds ``model(x)`` to a loss. Any H and W: the input is padded by
  reflection to the next multiple of :attr:`BiCoRSeg.stride` (32, the backbone's stride, times
  ``downsample``) and the logits are cropped back.
* ``model.forward_train(x)`` returns every output the full objective needs (:class:`TrainOutput`:
  main and auxiliary logits, per-layer heatmap logits and class embeddings); its H and W must be
  multiples of 32 (32 k with ``downsample`` k), since the heatmaps and the labels must cover the same pixels.
* ``model.predict_with_heatmaps(x)`` returns logits and the per-layer sigmoid heatmaps.
* :func:`create_model` builds a network by keywords; :class:`ModelConfig` is the same as data.

The model runs in the dtype of its input and parameters and under whatever autocast its caller sets
(Lightning's precision plugin in training); reduced-precision inference is the explicit wrapper
:class:`bicorseg.precision.InferencePrecision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.convnext import LayerNorm2d

from bicorseg.errors import ConfigError, InputError
from bicorseg.models.backbone import build_backbone
from bicorseg.models.config import ModelConfig
from bicorseg.models.hbis import HBISLayer
from bicorseg.models.hub import HubMixin
from bicorseg.models.neck import FusedNeck
from bicorseg.spec import DatasetSpec

# The head's two 2x pixel shuffles spread 16 consecutive channels of the decoder features over one
# block of 4 x 4 output pixels (channel q * 16 + s feeds position s of block q's pixels).
SUBPIXEL_BLOCK = 4
SUBPIXEL_CHANNELS = SUBPIXEL_BLOCK**2


@dataclass
class TrainOutput:
    """What :meth:`BiCoRSeg.forward_train` returns: every tensor :class:`BiCoRSegLoss` needs."""

    logits: torch.Tensor  # B x N x H x W
    aux_logits: torch.Tensor | None  # B x N x H x W from F_0 and the detached CE_0 (training only)
    heatmap_logits: list[torch.Tensor]  # per layer, B x N x h x w (S_l / tau)
    class_embeddings: list[torch.Tensor]  # per layer, B x N x C


class BiCoRSeg(HubMixin, nn.Module):
    """BiCoR-Seg (see module docstring). Build from a :class:`ModelConfig` and optional dataset facts."""

    def __init__(self, config: ModelConfig, dataset: DatasetSpec | None = None) -> None:
        super().__init__()
        if dataset is not None and dataset.num_classes != config.num_classes:
            raise ConfigError(
                f"model.num_classes is {config.num_classes} but dataset {dataset.name!r} has {dataset.num_classes}"
            )
        if dataset is not None and dataset.num_bands != config.in_channels:
            raise ConfigError(
                f"model.in_channels is {config.in_channels} but dataset {dataset.name!r} has "
                f"{dataset.num_bands} bands ({', '.join(dataset.bands)})"
            )
        self.config = config
        self.dataset = dataset  # the facts of the data it is trained for; saved in checkpoints
        width = config.width
        self.backbone = build_backbone(config.backbone, config.in_channels, config.pretrained)
        self.neck = FusedNeck(self.backbone.channels, width)
        self.class_embed = nn.Parameter(torch.empty(config.num_classes, width))
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        self.layers = nn.ModuleList(
            HBISLayer(
                width, config.selection_for_layer(i), config.lambda_film, config.tau, config.inner_steps
            )
            for i in range(config.layers)
        )
        # U as the method defines it; forward runs a fused equivalent (see _classify) on its parameters
        self.upsampler = nn.Sequential(
            nn.PixelShuffle(2), LayerNorm2d(width // 4, eps=1e-6), nn.GELU(), nn.PixelShuffle(2), nn.GELU()
        )
        self.classifier = nn.Linear(width, width // 16, bias=False)
        self.static_classifier = nn.Linear(width, width // 16, bias=False)
        if config.subpixel_init == "tied":
            tie_subpixel_channels(self)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def stride(self) -> int:
        """Inputs are padded to a multiple of this: :attr:`ModelConfig.stride`."""
        return self.config.stride

    def _decode_input(self, x: torch.Tensor, train: bool) -> TrainOutput:
        """Backbone + decode at the working resolution (``config.downsample``); outside training the
        logits are resized to the input's size and the heatmaps to its stride 4."""
        k = self.config.downsample
        size = (int(x.shape[-2]), int(x.shape[-1]))
        out = self.decode(
            self.backbone(F.avg_pool2d(x, k) if k > 1 else x), (size[0] // k, size[1] // k), train
        )
        if k > 1 and not train:  # training stays at the working resolution, where the objective is cheap
            out.logits = _resize(out.logits, size)
            out.heatmap_logits = [_resize(heat, (size[0] // 4, size[1] // 4)) for heat in out.heatmap_logits]
        return out

    def decode(self, stages: list[torch.Tensor], size: tuple[int, int], train: bool) -> TrainOutput:
        """Neck + HBIS + head from the four stage features; ``size`` is the output (H, W)."""
        return self.decode_features(self.neck(stages, (size[0] // 4, size[1] // 4)), train)

    def decode_features(self, f0: torch.Tensor, train: bool) -> TrainOutput:
        """HBIS layers + head from the neck output F_0 (B x C x h x w); outputs are 4h x 4w."""
        ce0 = self.class_embed.to(f0.dtype).unsqueeze(0).expand(f0.shape[0], -1, -1)
        f0_last = f0.permute(0, 2, 3, 1).contiguous()  # HBIS layers and the head work channels-last
        class_emb, feats = ce0, f0_last
        heatmaps, embeddings = [], []
        for layer in self.layers:
            class_emb, feats, heat = layer(class_emb, feats)
            heatmaps.append(heat)
            embeddings.append(class_emb)
        logits = self._head(self.classifier(class_emb), feats)
        aux = self._head(self.static_classifier(ce0.detach()), f0_last) if train else None
        return TrainOutput(logits, aux, heatmaps, embeddings)

    def _head(self, kernels: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Logits at full resolution; when training, the head's full-resolution intermediates are
        recomputed in the backward pass instead of stored (cheap element-wise work, most of its memory)."""
        if torch.is_grad_enabled() and (feats.requires_grad or kernels.requires_grad):
            return checkpoint(self._classify, kernels, feats, use_reentrant=False)
        return self._classify(kernels, feats)

    def _classify(self, kernels: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The upsampler U and the per-class dot product, fused; ``feats`` is B x h x w x C.

        Same numbers as ``einsum(kernels, U(feats))`` with U = ``self.upsampler`` (PixelShuffle,
        LayerNorm, GELU, PixelShuffle, GELU) but with one copy of the features instead of five: both
        pixel shuffles happen in one permutation (the LayerNorm parameters are permuted to match),
        the last GELU commutes with the last shuffle, and the classes are taken before the last
        shuffle, which then moves N channels instead of C/16.
        """
        b, h, w, c = feats.shape
        q = c // 16
        # channel index of feats = (q, i2, j2, i1, j1): i1/j1 are the first shuffle's offsets, i2/j2 the second's
        x = (
            feats.reshape(b, h, w, q, 2, 2, 2, 2)
            .permute(0, 1, 6, 2, 7, 4, 5, 3)
            .reshape(b, 2 * h, 2 * w, 4 * q)
        )
        norm = self.upsampler[1]
        assert isinstance(norm, LayerNorm2d)
        weight = norm.weight.view(q, 4).t().reshape(-1)
        bias = norm.bias.view(q, 4).t().reshape(-1)
        x = F.gelu(F.gelu(F.layer_norm(x, (4 * q,), weight, bias, norm.eps)))
        logits = torch.bmm(x.view(b, -1, q), kernels.transpose(1, 2))  # B x (2h*2w*4) x N
        n = kernels.shape[1]
        return logits.view(b, 2 * h, 2 * w, 2, 2, n).permute(0, 5, 1, 3, 2, 4).reshape(b, n, 4 * h, 4 * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits B x N x H x W of a normalised batch B x bands x H x W (any H, W), in every mode."""
        self._check_input(x)
        return self._forward_padded(x).logits

    def forward_train(self, x: torch.Tensor) -> TrainOutput:
        """Every output of the objective (:class:`TrainOutput`) for a batch whose H and W are multiples of
        :attr:`stride`.

        ``aux_logits`` come from the static class embeddings. With ``downsample`` 1, ``logits`` are those
        of :meth:`forward` (the same numbers in the same mode); with k every output stays at the working
        resolution (logits H/k x W/k, heatmaps H/4k x W/4k), where the objective is computed: pool the
        labels to it with :func:`bicorseg.losses.pool_labels`. :meth:`forward`'s logits are these
        logits resized to H x W, bilinear.
        """
        self._check_input(x)
        _check_multiple(x, "training", self.stride)
        return self._decode_input(x, train=True)

    def predict_with_heatmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B x N x H x W) and each layer's sigmoid heatmaps (B x N x ceil(H/4) x ceil(W/4)).

        The sigmoid is taken in at least float32, so that heatmaps computed under bf16/fp16 autocast
        keep float32's resolution of probabilities near 0 and 1.
        """
        self._check_input(x)
        out = self._forward_padded(x)
        h, w = -(-x.shape[-2] // 4), -(-x.shape[-1] // 4)
        return out.logits, [
            torch.sigmoid(_at_least_float32(heat)[..., :h, :w]) for heat in out.heatmap_logits
        ]

    def _forward_padded(self, x: torch.Tensor) -> TrainOutput:
        """Logits and heatmap logits of any H and W: padded to a multiple of :attr:`stride`, the logits cropped back."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = self._decode_input(x, train=False)
        out.logits = out.logits[..., :height, :width]
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise InputError(f"expected a batch of images B x bands x H x W, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise InputError(f"the model expects {self.config.in_channels} input band(s), got {x.shape[1]}")


@torch.no_grad()
def tie_subpixel_channels(model: BiCoRSeg) -> None:
    """ICNR-like initialisation (Aitken et al. 2017) of the channels the head's pixel shuffles spread.

    A sub-pixel upsampler gives each of the 16 pixels of a 4 x 4 output block its own channels of
    the decoder features F_L, and those channels start as independent random draws: an untrained
    or under-trained network then classifies the 16 positions differently everywhere, a regular
    4-pixel checker. ICNR starts the layer that feeds a pixel shuffle with its kernel repeated over
    each block's channels, so the upsampler begins as nearest-neighbour upsampling. Here F_L is
    made by the neck's 1x1 fusion (F_0) and, in each HBIS layer, a FiLM scale and shift per
    channel (``F_l = F_{l-1} * scale + shift``, from the ``gamma`` and ``beta`` maps); their output
    rows are tied in groups of 16 (each group takes its first row, drawn by the default
    initialisation), so every block's 16 channels are equal and the logits are constant over each
    4 x 4 block. Training then moves the channels apart only as far as the labels ask.
    """
    group = SUBPIXEL_CHANNELS

    def tie(parameter: torch.Tensor) -> None:
        parameter.copy_(parameter[::group].repeat_interleave(group, dim=0))

    tie(model.neck.fuse.weight)
    for layer in model.layers:
        assert isinstance(layer, HBISLayer)
        for film in (layer.gamma, layer.beta):
            tie(film.weight)
            tie(film.bias)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _check_multiple(x: torch.Tensor, mode: str, stride: int) -> None:
    height, width = x.shape[-2:]
    if height % stride or width % stride:
        fit_h, fit_w = -(-height // stride) * stride, -(-width // stride) * stride
        raise InputError(
            f"{mode} input {height}x{width} is not a multiple of {stride}: crop or pad to {fit_h}x{fit_w}"
        )


def create_model(
    num_classes: int = 6,
    backbone: str = "convnext_base",
    pretrained: str | None = None,
    in_channels: int = 3,
    *,
    dataset: DatasetSpec | None = None,
    **options: Any,
) -> BiCoRSeg:
    """A BiCoR-Seg network by keywords (as ``segmentation_models_pytorch.create_model`` builds its models).

    Args:
        num_classes: N, the number of classes.
        backbone: ``convnext_{nano,tiny,small,base}`` or ``timm:<name>`` (extra ``timm``).
        pretrained: None (random weights), ``"imagenet"`` (downloaded once) or a local weights file.
        in_channels: number of input bands.
        dataset: the facts of the data it is for (classes, bands, normalisation; saved in checkpoints).
        options: any other field of :class:`ModelConfig` (``width``, ``layers``, ``topk_ratio``, ...);
            an unknown name is a :class:`ConfigError` naming the nearest option.

    ``create_model(**config.to_dict())`` builds the network of ``BiCoRSeg(config)``.
    """
    named = {"num_classes": num_classes, "in_channels": in_channels, "backbone": backbone}
    config = ModelConfig.from_dict({**named, "pretrained": pretrained, **options})
    return BiCoRSeg(config, dataset)
