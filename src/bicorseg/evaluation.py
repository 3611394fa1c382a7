"""Evaluate a model on a dataset split: one confusion matrix, the scores, a report stating its convention.

Two modes:

* patches: batches of dataset samples go through the model as they are (optionally with TTA);
  samples of different sizes (a folder of images) go in batches of one size each;
* whole tiles: each sample is a full tile, predicted with overlapping sliding windows and smooth
  blending (:func:`bicorseg.inference.predict_array`), as practitioners apply the model.

Nothing here imports Lightning; the ``evaluate`` command and the benchmarks call :func:`evaluate_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bicorseg.data.release.records import Manifest
from bicorseg.defaults import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_OVERLAP, DEFAULT_TILE
from bicorseg.device import resolve_device, torch_threads
from bicorseg.errors import CheckpointError, ConfigError, InputError
from bicorseg.metrics import ConfusionMatrix, Convention, EvaluationReport, PeriodicShare
from bicorseg.models.config import ModelConfig
from bicorseg.precision import precision_of
from bicorseg.rescale import Rescale, check_checkpoint_units, check_rescale, needs_sample, resolve_rescale
from bicorseg.rescale import describe as describe_rescale
from bicorseg.spec import DATASET_KINDS, DatasetSpec, denormalise, normalise


def check_spec_matches(
    model_spec: DatasetSpec | None, spec: DatasetSpec, config: ModelConfig, source: str
) -> None:
    """Refuse a checkpoint whose classes or bands do not fit the dataset it is evaluated on."""
    if config.num_classes != spec.num_classes:
        raise CheckpointError(
            f"{source} predicts {config.num_classes} classes but dataset {spec.name!r} has {spec.num_classes}"
        )
    if model_spec is not None and tuple(model_spec.class_names) != tuple(spec.class_names):
        raise CheckpointError(
            f"{source} was trained for classes {', '.join(model_spec.class_names)}; dataset {spec.name!r} "
            f"has {', '.join(spec.class_names)}"
        )
    if config.in_channels != spec.num_bands:
        raise ConfigError(
            f"{source} expects {config.in_channels} band(s) but dataset {spec.name!r} gives {spec.num_bands}"
        )


def evaluation_dataset(
    kind: str, root: str | None, split: str, spec: DatasetSpec | None = None, **options: Any
) -> tuple[Dataset, DatasetSpec]:
    """A split to evaluate on, and the facts of its dataset.

    ``geo``: ``options`` are those of :class:`bicorseg.data.geo.GeoSource` and ``window``, the side of
    the windows every labelled pixel is scored in (``root`` and ``split`` are not used).
    """
    if kind not in DATASET_KINDS:
        raise ConfigError(f"must be one of {', '.join(DATASET_KINDS)}, got {kind!r}", key="dataset")
    if kind == "synthetic":
        from bicorseg.data.synthetic import SyntheticSegmentation, synthetic_spec

        spec = spec or synthetic_spec()
        seed = {"train": 0, "val": 1}.get(split, 2)  # 8 samples of 64 px: a smoke test
        return SyntheticSegmentation(8, 64, spec.num_classes, spec.num_bands, seed=seed), spec
    if kind == "geo":  # rasters and labels: every labelled pixel, on a grid of windows
        from bicorseg.data.geo import GeoSource, GeoWindows

        size = int(options.pop("window"))
        source = GeoSource(**options, spec=spec)
        return GeoWindows(source, source.labelled_windows(size), size), source.spec
    if not root:
        raise ConfigError(f"dataset {kind!r} needs its folder", key="root")
    from bicorseg.data import build_dataset

    dataset = build_dataset(kind, root, split, spec=spec, **options)
    spec = getattr(dataset, "spec", None) or spec
    if spec is None:  # pragma: no cover - bicorseg datasets always carry their spec
        raise ConfigError(f"dataset {kind!r} at {root} does not describe its classes")
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, Manifest):  # the labels a prepared split was cut against (e.g. eroded)
        splits = [manifest.splits.get(name) for name in split.split("+")]
        variants = [None if s is None else s.label_variant for s in splits]
        if any(v is None for v in variants):
            raise InputError(f"split {split!r} has no labels to score (a test split scored online?)")
        spec = replace(spec, label_variant="+".join(dict.fromkeys(v for v in variants if v is not None)))
    return dataset, spec


def data_protocol(dataset: Dataset | None) -> str:
    """The preparation protocol of prepared data, from its manifest ("" for other datasets)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    manifest = getattr(dataset, "manifest", None)
    if not isinstance(manifest, Manifest):
        return ""
    protocol, notes = manifest.protocol, manifest.protocol_notes
    return f"{protocol} ({'; '.join(notes)})" if protocol == "paper" and notes else protocol


RESCALE_SAMPLES = 16  # samples of a split the statistics of a rescale come from ...
RESCALE_PIXELS = 256 * 256  # ... each subsampled to at most this many pixels


def split_rescale(dataset: Dataset, spec: DatasetSpec, rescale: str) -> Rescale | None:
    """The map of the rescale ``rescale`` (:mod:`bicorseg.rescale`) for the images of ``dataset``.

    One map for the whole split: its statistics come from :data:`RESCALE_SAMPLES` samples spread
    over the split, each subsampled to at most :data:`RESCALE_PIXELS` pixels (the samples of a split
    are often patches of the same scenes, which one map keeps comparable).
    """
    mode = check_rescale(rescale)
    check_checkpoint_units(mode, spec.mean, f"for {spec.name}")
    sample = None
    if needs_sample(mode, None) and len(dataset):  # type: ignore[arg-type]
        count = len(dataset)  # type: ignore[arg-type]
        picks = sorted({round(i) for i in np.linspace(0, count - 1, min(RESCALE_SAMPLES, count))})
        values = []
        for index in picks:
            image = denormalise(dataset[index]["image"], spec.mean, spec.std).cpu().numpy()
            step = max(1, math.ceil(math.sqrt(image.shape[1] * image.shape[2] / RESCALE_PIXELS)))
            values.append(image[:, ::step, ::step].reshape(image.shape[0], -1))
        sample = np.concatenate(values, axis=1)
    return resolve_rescale(mode, spec.num_bands, None, sample)


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    spec: DatasetSpec,
    *,
    split: str = "",
    tta: str = "none",
    tta_scales: tuple[float, ...] | None = None,
    tta_merge: str | None = None,
    whole_tiles: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    device: str | torch.device = DEFAULT_DEVICE,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    rescale: str = "none",
    threads: int | None = None,
) -> EvaluationReport:
    """Scores of ``model`` on ``dataset`` by the published convention (see :mod:`bicorseg.metrics`).

    ``tta`` is a mode of :data:`bicorseg.inference.tta.TTA_MODES`; ``paper`` takes the passes the
    original publication used for ``spec``'s dataset (else the model's), with ``tta_scales`` and
    ``tta_merge`` left out. ``rescale`` maps images that are not in the checkpoint's 8-bit units
    (:mod:`bicorseg.rescale`), with one map for the whole split (:func:`split_rescale`), which the
    report's convention records. ``threads``: torch's CPU thread count while evaluating (None: as it is).
    """
    from bicorseg.inference import predict_array, with_tta
    from bicorseg.inference.tta import describe_tta, is_identity, resolve_tta, tta_name, tta_passes

    specs = [spec, getattr(model, "dataset", None)]  # the evaluated dataset's facts first
    plan = resolve_tta(tta, specs, tta_scales, tta_merge)
    device = resolve_device(str(device))
    num_classes = int(getattr(getattr(model, "config", None), "num_classes", spec.num_classes))
    metric = ConfusionMatrix(num_classes, spec.ignore_index).to(device)
    pattern = PeriodicShare(num_classes).to(device)
    model = model.to(device).eval()
    protocol = data_protocol(dataset)
    rescale_map = split_rescale(dataset, spec, rescale)
    total = len(dataset)  # type: ignore[arg-type]
    if limit is not None:
        total = min(total, limit)
    if total == 0:
        raise InputError("the evaluation split holds no samples")
    # without TTA the arg-max of the logits themselves (softmax rounding can tie near-equal classes)
    scores = model if is_identity(plan) else with_tta(model, plan)

    def image(sample: dict[str, Any]) -> torch.Tensor:
        """A sample's image, rescaled and normalised again when the split has a rescale map."""
        if rescale_map is None:
            return sample["image"]
        raw = denormalise(sample["image"], spec.mean, spec.std).cpu().numpy()
        return normalise(torch.from_numpy(rescale_map.apply(raw)), spec.mean, spec.std)

    def predictions() -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Class maps, their labels and how many samples they are."""
        if whole_tiles:
            for index in range(total):
                sample = dataset[index]
                if "mask" not in sample:
                    raise InputError(f"sample {sample.get('name', index)} has no labels to evaluate against")
                probs = predict_array(
                    model,
                    image(sample),
                    tile=tile,
                    overlap=overlap,
                    batch_size=batch_size,
                    tta=plan,
                    device=device,
                )
                yield torch.from_numpy(probs).argmax(0)[None], sample["mask"][None], 1
            return
        subset = dataset if total == len(dataset) else torch.utils.data.Subset(dataset, range(total))  # type: ignore[arg-type]
        # samples as a list, stacked per size below: a folder's images may differ in size
        for samples in DataLoader(subset, batch_size=batch_size, num_workers=num_workers, collate_fn=list):
            if any("mask" not in sample for sample in samples):
                raise InputError("the evaluation split has no labels (is it a test split scored online?)")
            by_size: dict[tuple[int, ...], list[dict[str, Any]]] = {}
            for sample in samples:
                by_size.setdefault(tuple(sample["image"].shape), []).append(sample)
            for group in by_size.values():
                images = torch.stack([image(sample) for sample in group]).to(device)
                masks = torch.stack([sample["mask"] for sample in group])
                yield scores(images).argmax(dim=1), masks, len(group)

    done = 0
    with torch.inference_mode(), torch_threads(threads):
        for classes, masks, count in predictions():
            classes = classes.to(device)
            metric.update(classes, masks.to(device))
            pattern.update(classes)
            done += count
            if progress:
                progress(done, total)
    mode = f"whole tiles (sliding windows {tile} px, overlap {overlap:g})" if whole_tiles else "patches"
    convention = Convention(
        spec.name,
        split=split,
        label_variant=spec.label_variant,
        mode=mode,
        tta=tta_name(tta, specs),
        tta_detail=describe_tta(plan),
        tta_passes=[p.to_dict() for p in tta_passes(plan)],
        protocol=protocol,
    )
    if check_rescale(rescale) != "none":
        convention.extra["rescale"] = describe_rescale(rescale_map)
    if (precision := precision_of(model)) is not None:
        convention.extra["precision"] = precision
    return EvaluationReport.from_confusion(
        metric.compute().cpu(),
        spec.class_names,
        spec.eval_classes,
        convention,
        period4_share=float(pattern.compute()),
    )
