"""Self-describing checkpoints: save, load, and convert from the original public implementation.

A bicorseg checkpoint is a ``torch.save`` dict::

    {"format": "bicorseg", "format_version": 1, "bicorseg_version": "...",
     "model_config": ModelConfig.to_dict(), "dataset": DatasetSpec.to_dict() or None,
     "tiling": {"tile": 512, "overlap": 0.25},   # the default tile for predict, heatmaps, evaluate
     "state_dict": BiCoRSeg.state_dict(), "extra": {...}}

The metadata is that of every saved model (:func:`bicorseg.models.hub.metadata`); ``tiling`` is the
size the model saw in training (``bicorseg train`` records its crop size), checkpoints saved without
one are applied with 512 / 0.25 (:class:`~bicorseg.models.hub.Tiling`). Pretrained folders and Hub
repositories are read by :mod:`bicorseg.models.hub`.

The training layer writes Lightning checkpoints that carry the same metadata under the key
``"bicorseg"`` and the model's weights with the prefix ``model.``; :func:`load_checkpoint` reads
both. Files are written to a temporary name and renamed, so a checkpoint is never half-written.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from bicorseg.atomic import atomic_output, sha256_file
from bicorseg.errors import CheckpointError, OutputError, first_line
from bicorseg.models.bicorseg import BiCoRSeg, ModelConfig
from bicorseg.models.hub import CONFIG, FORMAT, WEIGHTS, Tiling, metadata, parse_metadata, read_pretrained
from bicorseg.precision import InferencePrecision, with_precision
from bicorseg.spec import DatasetSpec
from bicorseg.torch_files import check_finite_weights, read_torch_file

LIGHTNING_PREFIX = "model."


@dataclass
class Checkpoint:
    """The content of a checkpoint, independent of the file layout it came from."""

    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    dataset: DatasetSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tiling: Tiling = field(default_factory=Tiling)

    def build_model(self) -> BiCoRSeg:
        """The network with these weights, in evaluation mode (no pretrained download)."""
        model = BiCoRSeg(replace(self.model_config, pretrained=None), dataset=self.dataset)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            raise CheckpointError(
                f"weights do not fit the model configuration: {first_line(error)}"
            ) from error
        return model.eval()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    try:
        with atomic_output(path) as temp, open(temp, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
    except (OSError, RuntimeError) as error:
        # torch reports a failed write (disk full) as a RuntimeError whose cause is the OSError
        cause = error if isinstance(error, OSError) else error.__context__
        if isinstance(cause, OSError):
            raise OutputError(f"cannot write {path}: {cause.strerror or cause}") from error
        raise
    return path


def save_checkpoint(
    model: BiCoRSeg | InferencePrecision,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    tiling: Tiling | None = None,
) -> Path:
    """Write ``model`` (weights, configuration, dataset facts, default tiling) as a bicorseg checkpoint
    (of an :class:`InferencePrecision`, the model it wraps: precision is a way of running it)."""
    if isinstance(model, InferencePrecision):
        model = model.model
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({**metadata(model, tiling), "state_dict": state, "extra": extra or {}}, path)


def read_checkpoint(path: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """The dict a checkpoint file holds (:func:`~bicorseg.torch_files.read_torch_file` and its ``options``)."""
    data = read_torch_file(path, **options)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a checkpoint (it holds a {type(data).__name__})")
    return data


def load_checkpoint(
    path: str | os.PathLike, num_classes: int | None = None, in_channels: int | None = None
) -> Checkpoint:
    """Read a bicorseg checkpoint; optionally check classes and bands.

    ``path``: a checkpoint file (plain, or a Lightning checkpoint of ``bicorseg train``), a pretrained
    folder (:func:`bicorseg.models.hub.save_pretrained`) or a Hugging Face Hub repository ``hf://org/name``.
    """
    if str(path).startswith("hf://") or Path(path).is_dir():
        checkpoint = Checkpoint(*read_pretrained(path, BiCoRSeg))
    else:
        checkpoint = _load_file(path)
    config = checkpoint.model_config
    if num_classes is not None and config.num_classes != num_classes:
        raise CheckpointError(
            f"{path} was trained for {config.num_classes} classes, but {num_classes} are expected here"
        )
    if in_channels is not None and config.in_channels != in_channels:
        raise CheckpointError(
            f"{path} expects {config.in_channels} input band(s), but the input has {in_channels}"
        )
    return checkpoint


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """The content hash that identifies a checkpoint: of its file, or for a pretrained folder the
    sha256 of its configuration's and weights' digests."""
    path = Path(path)
    if path.is_dir():
        return hashlib.sha256((sha256_file(path / CONFIG) + sha256_file(path / WEIGHTS)).encode()).hexdigest()
    return sha256_file(path)


def _load_file(path: str | os.PathLike) -> Checkpoint:
    data = read_checkpoint(path)
    extra = data.get("extra")
    if data.get("format") == FORMAT:
        meta, state = data, data.get("state_dict")
    elif isinstance(data.get("bicorseg"), dict):  # a Lightning checkpoint written by bicorseg train
        meta, lightning_state = data["bicorseg"], data.get("state_dict")
        state = {
            k.removeprefix(LIGHTNING_PREFIX): v
            for k, v in (lightning_state if isinstance(lightning_state, dict) else {}).items()
            if str(k).startswith(LIGHTNING_PREFIX)
        }
        extra = {"train_config": meta["train_config"]} if isinstance(meta.get("train_config"), dict) else {}
    elif isinstance(original := data.get("state_dict", data), dict) and any(
        str(k).startswith(("net.", "encoder.", "decoder.")) for k in original
    ):
        raise CheckpointError(
            f"{path} looks like a checkpoint of the original BiCoR-Seg code: convert it first "
            "(the bicorseg convert command, or bicorseg.checkpoint.convert_official_file)"
        )
    else:
        raise CheckpointError(f"{path} is not a bicorseg checkpoint (no model configuration inside)")
    config, dataset, tiling = parse_metadata(meta, path)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no model weights")
    check_finite_weights(state, path)
    return Checkpoint(config, state, dataset, dict(extra) if isinstance(extra, dict) else {}, tiling)


def load_model(
    path: str | os.PathLike,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
    precision: str = "fp32",
) -> BiCoRSeg | InferencePrecision:
    """The model stored in any bicorseg checkpoint, in evaluation mode, on ``map_location``.

    ``precision`` is that of its inference: ``fp32`` (default) gives the :class:`BiCoRSeg` itself;
    ``bf16`` or ``fp16`` give it wrapped in an :class:`~bicorseg.precision.InferencePrecision`
    (autocast, float32 outputs; the network is its ``.model``); ``auto`` is bf16 where the device
    runs it fast, else fp32 (see :mod:`bicorseg.precision`). The logits are float32 in every case.
    """
    model = load_checkpoint(path, num_classes=num_classes).build_model().to(map_location)
    return cast("BiCoRSeg | InferencePrecision", with_precision(model, precision, map_location))


# --- conversion from the original public implementation ------------------------------------------

_OFFICIAL_RULES = [
    (r"^encoder\.0\.(.+)$", r"backbone.features.\1"),
    (r"^proj_layers\.(\d+)\.proj\.(weight|bias)$", r"neck.proj.\1.\2"),
    (r"^feature_aggregator\.weight$", r"neck.fuse.weight"),
    (r"^decoder\.class_dict\.class_embed\.weight$", r"class_embed"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.dict_to_feat\.weight$", r"layers.\1.query.weight"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.feat_to_dict\.weight$", r"layers.\1.value.weight"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.gate_mlp\.([02])\.(weight|bias)$", r"layers.\1.gate.\2.\3"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.cand_mlp\.([02])\.(weight|bias)$", r"layers.\1.candidate.\2.\3"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.gamma_proj\.(weight|bias)$", r"layers.\1.gamma.\2"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.beta_proj\.(weight|bias)$", r"layers.\1.beta.\2"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.feat_ln\.(weight|bias)$", r"layers.\1.feat_norm.\2"),
    (r"^decoder\.bicor_stack\.layers\.(\d+)\.dict_ln\.(weight|bias)$", r"layers.\1.class_norm.\2"),
    (r"^decoder\.upsampler\.1\.(weight|bias)$", r"upsampler.1.\1"),
    (r"^decoder\.classifier_proj\.weight$", r"classifier.weight"),
    (r"^decoder\.static_classifier\.weight$", r"static_classifier.weight"),
]


def map_official_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename keys of the original layout to bicorseg's; returns (mapped, unexpected source keys)."""
    if state and all(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    mapped, unexpected = {}, []
    for key, value in state.items():
        for pattern, target in _OFFICIAL_RULES:
            if re.match(pattern, key):
                mapped[re.sub(pattern, target, key)] = value
                break
        else:
            unexpected.append(key)
    return mapped, unexpected


def _infer_backbone(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    stem = state.get("backbone.features.0.0.weight")
    if stem is None:
        raise CheckpointError("the checkpoint has no backbone weights (encoder.0.0.0.weight is missing)")
    stem_width, in_channels = stem.shape[0], stem.shape[1]
    stage3_depth = len({k.split(".")[3] for k in state if k.startswith("backbone.features.5.")})
    known = {(128, 27): "convnext_base", (96, 27): "convnext_small", (96, 9): "convnext_tiny"}
    name = known.get((stem_width, stage3_depth))
    if name is None:
        raise CheckpointError(
            f"unrecognised backbone: stem width {stem_width}, {stage3_depth} blocks in stage 3 "
            "(expected a torchvision ConvNeXt tiny, small or base)"
        )
    return name, in_channels


def convert_official(
    source: dict[str, Any],
    num_classes: int,
    layers: int | None = None,
    topk_ratio: float | list[float] = 1.0,
    min_pixels: int = 64,
    dataset: DatasetSpec | None = None,
    recipe: str | None = None,
) -> Checkpoint:
    """A :class:`Checkpoint` from a checkpoint dict of the original public implementation.

    Every source key must be consumed and every target key filled, else :class:`CheckpointError`
    names the missing and unexpected keys. ``recipe`` names the published recipe that ``layers``,
    ``topk_ratio`` and ``min_pixels`` come from (for messages and the checkpoint's ``extra``).
    A checkpoint that is already bicorseg's is refused: there is nothing to convert.
    """
    if source.get("format") == FORMAT or isinstance(source.get("bicorseg"), dict):  # bicorseg's, or train's
        raise CheckpointError(
            "the source is already a bicorseg checkpoint: use it as it is, there is nothing to convert"
        )
    state = source.get("state_dict", source)
    if not isinstance(state, dict) or not state:
        raise CheckpointError("the source holds no state dict")
    mapped, unexpected = map_official_state_dict(state)
    class_table = mapped.get("class_embed")
    if class_table is None:
        raise CheckpointError("the source has no class embeddings (decoder.class_dict.class_embed.weight)")
    if class_table.shape[0] != num_classes:
        raise CheckpointError(
            f"the source has {class_table.shape[0]} class embeddings but `num_classes` is {num_classes}"
        )
    found_layers = len({k.split(".")[1] for k in mapped if k.startswith("layers.")})
    if layers is not None and layers != found_layers:
        asked = f"the {recipe} recipe has {layers}" if recipe else f"{layers} were asked for"
        raise CheckpointError(f"the source has {found_layers} HBIS layers but {asked}")
    backbone, in_channels = _infer_backbone(mapped)
    config = ModelConfig(
        num_classes=num_classes,
        in_channels=in_channels,
        backbone=backbone,
        width=int(class_table.shape[1]),
        layers=found_layers,
        topk_ratio=topk_ratio,
        min_pixels=min_pixels,
        subpixel_init="independent",  # the original's start (its weights replace it anyway)
    )
    target_keys = set(BiCoRSeg(config).state_dict())
    missing = sorted(target_keys - set(mapped))
    unexpected += sorted(set(mapped) - target_keys)
    if missing or unexpected:
        parts = [
            f"{len(keys)} {what} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise CheckpointError("the source does not match the BiCoR-Seg layout: " + "; ".join(parts))
    return Checkpoint(
        config,
        {k: v.float() if v.is_floating_point() else v for k, v in mapped.items()},
        dataset,
        {"converted_from": "official BiCoR-Seg", **({"recipe": recipe} if recipe else {})},
    )


def convert_official_file(
    source_path: str | os.PathLike, output_path: str | os.PathLike, **options: Any
) -> Checkpoint:
    """Read an original checkpoint file, convert it, check it loads, and save it atomically."""
    source = read_checkpoint(source_path)
    state = source.get("state_dict", source)
    if isinstance(state, dict):
        check_finite_weights(state, source_path)
    checkpoint = convert_official(source, **options)
    model = checkpoint.build_model()
    save_checkpoint(model, output_path, extra=checkpoint.extra)
    return checkpoint
