"""The Lightning data module: training and validation loaders built from a :class:`DataConfig`.

Datasets come from :mod:`bicorseg.data` (prepared Vaihingen, Potsdam, LoveDA roots and folder
datasets), or from :class:`SyntheticSegmentation`, a deterministic procedural set for tests and smoke
runs. Under data-parallel training Lightning gives every process its own shard of the samples.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset

from bicorseg.errors import BicorsegError, ConfigError
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import DataConfig
from bicorseg.training.synthetic import SyntheticSegmentation, synthetic_spec

__all__ = [
    "SegmentationDataModule",
    "SyntheticSegmentation",
    "build_split",
    "select_samples",
    "synthetic_spec",
    "training_transform",
]


def _names(dataset: Dataset) -> list[str]:
    namer = getattr(dataset, "sample_name", None)
    size = len(dataset)  # type: ignore[arg-type]
    if namer is not None:
        return [str(namer(i)) for i in range(size)]
    return [str(dataset[i]["name"]) for i in range(size)]  # loads every sample: small datasets only


def select_samples(dataset: Dataset, wanted: list[str] | None, key: str) -> Dataset:
    """The samples whose name equals an entry of ``wanted`` or ends with ``/<entry>``, in dataset order."""
    if wanted is None:
        return dataset
    names = _names(dataset)
    chosen = [i for i, name in enumerate(names) if any(name == w or name.endswith("/" + w) for w in wanted)]
    matched = {w for w in wanted if any(n == w or n.endswith("/" + w) for n in names)}
    missing = [w for w in wanted if w not in matched]
    if missing:
        example = ", ".join(names[:3])
        raise ConfigError(f"{key}: no sample named {missing[0]!r} (names look like: {example})")
    return Subset(dataset, chosen)


def build_split(
    config: DataConfig,
    spec: DatasetSpec,
    splits: list[str],
    train: bool,
    seed: int = 0,
    transform: Any = None,
) -> Dataset:
    """The configured dataset over ``splits`` (joined), with an optional joint transform."""
    if config.dataset == "synthetic":  # fixed seeds: the evaluate command sees the same samples
        size, train_count, val_count = config.synthetic_size
        count = train_count if train else val_count
        return SyntheticSegmentation(count, size, spec.num_classes, spec.num_bands, seed=0 if train else 1)
    from bicorseg.data import build_dataset

    def build(split: str) -> Dataset:
        try:
            return build_dataset(
                config.dataset, config.root, split, spec=spec, transform=transform, **config.options
            )
        except TypeError as error:  # an option this dataset kind does not take
            raise ConfigError(f"data.options: {error}") from None

    if config.dataset != "folder":
        return build("+".join(splits))  # prepared splits join inside one dataset (mosaics span them)
    parts = [build(split) for split in splits]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def training_transform(config: DataConfig, seed: int) -> Any:
    """The joint training augmentation of ``data.augment`` (a plain random crop when it is false)."""
    if config.dataset == "synthetic":
        return None
    from bicorseg.data import build_train_transform

    if config.augment is False:
        options: dict[str, Any] = {
            "scales": [1.0],
            "crop_retries": 0,
            "rot90_p": 0.0,
            "flip_p": 0.0,
            "mosaic_p": 0.0,
        }
    else:
        options = {} if config.augment is True else dict(config.augment)
    options.setdefault("seed", seed)
    try:
        return build_train_transform(crop_size=config.crop_size, **options)
    except TypeError as error:
        raise ConfigError(f"data.augment: {error}") from None
    except BicorsegError as error:
        raise ConfigError(f"data.augment: {error}") from None


class SegmentationDataModule(L.LightningDataModule):
    """Loaders for training (augmented, shuffled, equal-size batches) and validation."""

    def __init__(self, config: DataConfig, spec: DatasetSpec, seed: int = 42) -> None:
        super().__init__()
        self.config, self.spec, self.seed = config, spec, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        if self.train_set is None and stage in (None, "fit"):
            transform = training_transform(cfg, self.seed)
            train = build_split(
                cfg, self.spec, cfg.train_splits, train=True, seed=self.seed, transform=transform
            )
            train = select_samples(train, cfg.train_samples, "data.train_samples")
            if len(train) < cfg.batch_size:  # type: ignore[arg-type]
                raise ConfigError(
                    f"data.batch_size: {cfg.batch_size} is larger than the {len(train)} training samples"  # type: ignore[arg-type]
                )
            self.train_set = train
        if self.val_set is None and cfg.val_split is not None and stage in (None, "fit", "validate"):
            val = build_split(cfg, self.spec, [cfg.val_split], train=False, seed=self.seed)
            self.val_set = select_samples(val, cfg.val_samples, "data.val_samples")

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        cfg = self.config
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            # our own shard sampler: Lightning's would always shuffle, ignoring data.shuffle
            sampler = DistributedSampler(
                self.train_set,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=cfg.shuffle,
                seed=self.seed,
                drop_last=True,
            )
        return DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle if sampler is None else None,
            sampler=sampler,
            drop_last=True,  # equal batches: the global-batch statistics see the same sample count
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        cfg = self.config
        return DataLoader(
            self.val_set,
            batch_size=cfg.val_batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
