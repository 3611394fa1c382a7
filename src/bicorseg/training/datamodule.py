"""The Lightning data module: training and validation loaders built from a :class:`DataConfig`.

Datasets come from :mod:`bicorseg.data` (prepared Vaihingen, Potsdam, LoveDA roots and folder
datasets), or from :class:`SyntheticSegmentation`, a deterministic procedural set for tests and smoke
runs. Under data-parallel training Lightning gives every process its own shard of the samples.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from bicorseg.errors import BicorsegError, ConfigError
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import DataConfig, expand_indices

SYNTHETIC_IGNORE = 255


def synthetic_spec(num_classes: int = 4, bands: int = 3) -> DatasetSpec:
    """Facts of the synthetic dataset: ``num_classes`` classes, ``bands`` normalised bands."""
    generator = torch.Generator().manual_seed(7)
    palette = tuple(
        tuple(int(v) for v in torch.randint(0, 256, (3,), generator=generator)) for _ in range(num_classes)
    )
    return DatasetSpec(
        name="synthetic",
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
        palette=palette,
        ignore_index=SYNTHETIC_IGNORE,
        eval_classes=tuple(range(num_classes)),
        bands=tuple(f"band_{i + 1}" for i in range(bands)),
        mean=(0.0,) * bands,
        std=(1.0,) * bands,
    )


class SyntheticSegmentation(Dataset):
    """Blocky label maps with class-coloured, noisy images; sample ``i`` is the same on every call.

    Samples are dicts like those of :mod:`bicorseg.data`: ``image`` (float32 bands x S x S, already
    normalised), ``mask`` (int64 S x S, a one-pixel ignored border) and ``name``.
    """

    def __init__(self, count: int, size: int, num_classes: int, bands: int = 3, seed: int = 0) -> None:
        self.count, self.size, self.num_classes, self.bands, self.seed = count, size, num_classes, bands, seed
        self.colours = torch.randn(num_classes, bands, generator=torch.Generator().manual_seed(11))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        block = max(1, self.size // 8)
        cells = -(-self.size // block)
        coarse = torch.randint(0, self.num_classes, (cells, cells), generator=generator)
        mask = coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[: self.size, : self.size]
        image = self.colours[mask].permute(2, 0, 1) + 0.7 * torch.randn(
            self.bands, self.size, self.size, generator=generator
        )
        mask = mask.clone()
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = SYNTHETIC_IGNORE
        return {"image": image.float().contiguous(), "mask": mask.long(), "name": f"synthetic_{index}"}


class RandomCrop:
    """A random ``size`` x ``size`` crop of a sample dict (used when no augmentation is configured)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        height, width = sample["mask"].shape[-2:]
        if height < self.size or width < self.size:
            raise BicorsegError(
                f"sample {sample.get('name', '?')} is {height}x{width}, smaller than data.crop_size {self.size}"
            )
        top = int(torch.randint(0, height - self.size + 1, ()))
        left = int(torch.randint(0, width - self.size + 1, ()))
        out = dict(sample)
        out["image"] = sample["image"][..., top : top + self.size, left : left + self.size]
        out["mask"] = sample["mask"][..., top : top + self.size, left : left + self.size]
        return out


class _Mapped(Dataset):
    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.dataset[index])


def _subset(dataset: Dataset, indices: list[int | str] | None, key: str) -> Dataset:
    if indices is None:
        return dataset
    chosen = expand_indices(indices, key)
    size = len(dataset)  # type: ignore[arg-type]
    bad = [i for i in chosen if i >= size]
    if bad:
        raise ConfigError(f"{key}: index {bad[0]} is out of range for {size} samples")
    return Subset(dataset, chosen)


def build_split(
    config: DataConfig, spec: DatasetSpec, split: str, train: bool, seed: int = 0, transform: Any = None
) -> Dataset:
    """One split of the configured dataset, without the training augmentation."""
    if config.dataset == "synthetic":
        size, train_count, val_count = config.synthetic_size
        return SyntheticSegmentation(
            train_count if train else val_count,
            size,
            spec.num_classes,
            spec.num_bands,
            seed=seed + (0 if train else 1),
        )
    from bicorseg.data import build_dataset

    try:
        return build_dataset(
            config.dataset, config.root, split, spec=spec, transform=transform, **config.options
        )
    except TypeError as error:  # unknown option for this dataset kind
        raise ConfigError(f"data.options: {error}") from None


def training_transform(config: DataConfig, spec: DatasetSpec) -> tuple[Any, Any]:
    """(per-sample transform, dataset wrapper or None) for training, from ``data.augment``."""
    if config.augment is False or config.dataset == "synthetic":
        return (RandomCrop(config.crop_size) if config.dataset != "synthetic" else None), None
    try:
        from bicorseg.data import augment as augment_module
    except ImportError:
        return RandomCrop(config.crop_size), None
    options = {} if config.augment is True else dict(config.augment)
    try:
        aug_config = augment_module.AugmentConfig(crop_size=config.crop_size, **options)
    except TypeError as error:
        raise ConfigError(f"data.augment: {error}") from None
    except BicorsegError as error:
        raise ConfigError(f"data.augment: {error}") from None
    transform = augment_module.build_train_transform(aug_config, spec)
    wrapper = getattr(augment_module, "wrap_train_dataset", None)
    return transform, (lambda ds: wrapper(ds, aug_config, spec)) if wrapper else None


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
            transform, wrapper = training_transform(cfg, self.spec)
            parts = [
                build_split(cfg, self.spec, split, train=True, seed=self.seed) for split in cfg.train_splits
            ]
            train: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
            train = _subset(train, cfg.train_indices, "data.train_indices")
            if wrapper is not None:
                train = wrapper(train)
            if transform is not None:
                train = _Mapped(train, transform)
            if len(train) < cfg.batch_size:  # type: ignore[arg-type]
                raise ConfigError(
                    f"data.batch_size: {cfg.batch_size} is larger than the {len(train)} training samples"  # type: ignore[arg-type]
                )
            self.train_set = train
        if self.val_set is None and cfg.val_split is not None and stage in (None, "fit", "validate"):
            val = build_split(cfg, self.spec, cfg.val_split, train=False, seed=self.seed)
            self.val_set = _subset(val, cfg.val_indices, "data.val_indices")

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        cfg = self.config
        return DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
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
