"""The Lightning data module: training and validation loaders built from a :class:`DataConfig`.

Datasets come from :mod:`bicorseg.data` (prepared Vaihingen, Potsdam, LoveDA roots and folder
datasets), from :mod:`bicorseg.data.geo` (georeferenced rasters and label layers: training chips
drawn on the fly, validation on a spatial area no chip overlaps; :attr:`SegmentationDataModule.summary`
holds the lines a run prints first), or from :class:`bicorseg.data.synthetic.SyntheticSegmentation`,
a deterministic procedural set for tests and smoke runs. Under data-parallel training every
process reads its own shard of the training samples (a ``DistributedSampler`` that keeps ``data.shuffle``)
and of the validation samples (each scored once, however many processes share them).
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from bicorseg.data.base import SampleSelection
from bicorseg.data.synthetic import SyntheticSegmentation
from bicorseg.errors import ConfigError
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import DataConfig


def _names(dataset: Any) -> list[str]:
    return [str(dataset.sample_name(i)) for i in range(len(dataset))]


def _matches(name: str, entry: str) -> bool:
    """A sample name matches an entry equal to it, its last parts (``7``) or a folder it lies in (``Tile 8``)."""
    return name == entry or name.endswith("/" + entry) or name.startswith(entry + "/") or f"/{entry}/" in name


def match_samples(names: list[str], wanted: list[str], key: str) -> list[int]:
    """Positions of the samples matching an entry of ``wanted`` (see :func:`_matches`), in dataset order."""
    chosen = [i for i, name in enumerate(names) if any(_matches(name, w) for w in wanted)]
    missing = [w for w in wanted if not any(_matches(n, w) for n in names)]
    if missing:
        example = ", ".join(names[:3])
        raise ConfigError(f"no sample named {missing[0]!r} (names look like: {example})", key=key)
    return chosen


def _select(dataset: SyntheticSegmentation, wanted: list[str] | None, key: str) -> Any:
    """The samples whose name matches an entry of ``wanted``, in dataset order (all for None)."""
    return dataset if wanted is None else Subset(dataset, match_samples(_names(dataset), wanted, key))


def held_out(names: list[str], fraction: float, seed: int) -> list[int]:
    """Positions of a seeded ``fraction`` of the samples (at least one, never all).

    The draw depends on the names and the seed only, not on the order the samples are listed in.
    """
    if len(names) < 2:
        raise ConfigError(
            f"{len(names)} sample(s) cannot be split into training and validation", key="data.val_fraction"
        )
    order = sorted(range(len(names)), key=lambda i: names[i])
    random.Random(seed).shuffle(order)
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    return sorted(order[:count])


def split_samples(
    config: DataConfig, train: SampleSelection, val: SampleSelection | None
) -> tuple[list[int], list[int] | None]:
    """Positions of the training samples in ``train`` and of the validation samples in ``val``.

    Validation takes ``val_samples``, or a seeded ``val_fraction``, or all of its split. A
    validation sample is never trained on: when validation comes from a training split the held-out
    samples leave training; otherwise a sample in both is refused.
    """
    train_names = _names(train)
    train_idx = (
        match_samples(train_names, config.train_samples, "data.train_samples")
        if config.train_samples is not None
        else list(range(len(train_names)))
    )
    if val is None:
        return train_idx, None
    val_names = _names(val)
    if config.val_samples is not None:
        val_idx = match_samples(val_names, config.val_samples, "data.val_samples")
    elif config.val_fraction is not None:
        val_idx = held_out(val_names, config.val_fraction, config.val_seed)
    else:
        val_idx = list(range(len(val_names)))
    held = {val.sample_path(i) for i in val_idx}
    both = [i for i in train_idx if train.sample_path(i) in held]
    if both and (config.train_samples is not None or not config.holds_out):
        key = "data.train_samples" if config.train_samples is not None else "data.val_split"
        raise ConfigError(
            f"sample {train_names[both[0]]!r} is both a training and a validation sample "
            f"({len(both)} such); validation must be held out",
            key=key,
        )
    train_idx = [i for i in train_idx if train.sample_path(i) not in held]
    if not train_idx:
        raise ConfigError("no training sample is left once validation is held out", key="data.val_samples")
    return train_idx, val_idx


def _joined(config: DataConfig, spec: DatasetSpec, splits: list[str]) -> SampleSelection:
    """The configured dataset over ``splits``: prepared splits join inside one dataset, folder
    splits in the selection."""
    from bicorseg.data import build_dataset

    def build(split: str) -> Any:
        return build_dataset(config.dataset, config.root, split, spec=spec, **config.dataset_options())

    return SampleSelection(
        [build("+".join(splits))] if config.dataset != "folder" else list(map(build, splits))
    )


def training_transform(config: DataConfig, seed: int) -> Any:
    """The joint training augmentation of ``data.augment``, seeded with the run's seed."""
    from bicorseg.data.transforms import AugmentConfig, TrainTransform

    return TrainTransform(AugmentConfig(crop_size=config.crop_size, seed=seed, **asdict(config.augment)))


class SegmentationDataModule(L.LightningDataModule):
    """Loaders for training (augmented, shuffled, equal-size batches) and validation."""

    def __init__(self, config: DataConfig, spec: DatasetSpec, seed: int = 42) -> None:
        super().__init__()
        self.config, self.spec, self.seed = config, spec, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.summary: list[str] = []  # what the data is, printed first by the run (geo datasets)
        self.geo_source: Any = None

    def setup(self, stage: str | None = None) -> None:
        """The training and validation sets, once (the run sets them up before Lightning's fit)."""
        if self.train_set is not None:
            return
        cfg = self.config
        if cfg.dataset == "geo":
            self._setup_geo()
            return
        if cfg.dataset == "synthetic":  # procedural, fixed seeds: training and validation samples differ
            size, train_count, val_count = cfg.synthetic_size
            classes, bands = self.spec.num_classes, self.spec.num_bands
            train = SyntheticSegmentation(train_count, size, classes, bands, seed=0)
            train = _select(train, cfg.train_samples, "data.train_samples")
            if cfg.val_split is not None:
                val = SyntheticSegmentation(val_count, size, classes, bands, seed=1)
                self.val_set = _select(val, cfg.val_samples, "data.val_samples")
        else:
            train_all = _joined(cfg, self.spec, cfg.train_splits)
            val_all = _joined(cfg, self.spec, [cfg.val_split]) if cfg.val_split is not None else None
            train_idx, val_idx = split_samples(cfg, train_all, val_all)
            train = SampleSelection(
                train_all.datasets, train_idx, training_transform(cfg, self.seed), cfg.cache_mb << 20
            )
            if val_all is not None:
                self.val_set = SampleSelection(val_all.datasets, val_idx)
        if len(train) < cfg.batch_size:
            raise ConfigError(
                f"{cfg.batch_size} is larger than the {len(train)} training samples", key="data.batch_size"
            )
        self.train_set = train

    def _setup_geo(self) -> None:
        """Chips from rasters and labels: the source, the spatial split, the training and validation sets."""
        from bicorseg.data.geo import GeoTrainingChips, GeoWindows, training_window

        cfg = self.config
        transform = training_transform(cfg, self.seed)
        split = cfg.geo_split(self.spec, training_window(cfg.crop_size, transform.config.scales))
        self.geo_source = source = split.source
        self.summary = split.summary()
        self.train_set = GeoTrainingChips(
            source, split.training, cfg.chips_per_epoch, transform, seed=self.seed
        )
        if cfg.val_split is not None:
            self.val_set = GeoWindows(source, split.validation, cfg.crop_size, split.areas)
        if cfg.chips_per_epoch < cfg.batch_size:
            raise ConfigError(
                f"{cfg.batch_size} is larger than the {cfg.chips_per_epoch} chips per epoch",
                key="data.batch_size",
            )

    def teardown(self, stage: str | None = None) -> None:
        if self.geo_source is not None:
            self.geo_source.close()  # the indexed copy of the polygons

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        cfg = self.config
        trainer = self.trainer
        sampler = None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if trainer is not None and (trainer.world_size > 1 or distributed):
            # our own shard sampler whenever training is distributed, one process included: Lightning
            # would put in its own, which always shuffles, ignoring data.shuffle
            sampler = DistributedSampler(
                self.train_set,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=cfg.shuffle,
                seed=self.seed,
                drop_last=True,
            )
        # equal batches (drop_last): the global-batch statistics see the same sample count
        shuffle = cfg.shuffle if sampler is None else None
        return self._loader(self.train_set, cfg.batch_size, shuffle=shuffle, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        trainer = self.trainer
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if trainer is None or not (trainer.world_size > 1 or distributed):
            return self._loader(self.val_set, self.config.val_batch_size)
        # every process runs as many batches (the forward passes of data-parallel training must pair
        # up), and the samples that even out the shards are ignored: each is scored once
        padded = _PaddedValidation(self.val_set, self.spec.ignore_index)
        sampler = _ValidationShards(padded, num_replicas=trainer.world_size, rank=trainer.global_rank)
        return self._loader(padded, self.config.val_batch_size, sampler=sampler)

    def _loader(self, dataset: Dataset, batch_size: int, **options: Any) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **options,
        )


class _PaddedValidation(Dataset):
    """A validation set that reads position ``len + i`` as its sample ``i`` with every pixel ignored."""

    def __init__(self, dataset: Dataset, ignore_index: int) -> None:
        self.dataset, self.ignore_index = dataset, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        count = len(self)
        if index < count:
            return self.dataset[index]
        sample = dict(self.dataset[index - count])
        sample["mask"] = torch.full_like(sample["mask"], self.ignore_index)
        return sample


class _ValidationShards(DistributedSampler):
    """Every process's share of a :class:`_PaddedValidation`, in order, padded to equal length with
    the positions of ignored copies (Lightning's sampler pads with copies that are scored twice)."""

    def __init__(self, dataset: _PaddedValidation, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Any:
        count = len(self.dataset)  # type: ignore[arg-type]
        order = list(range(count)) + [count + i % count for i in range(self.total_size - count)]
        return iter(order[self.rank : self.total_size : self.num_replicas])
