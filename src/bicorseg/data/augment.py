"""The training augmentation as the training layer builds it: from a config, on finished samples.

* ``build_train_transform(AugmentConfig(crop_size=512, ...), spec)``: a :class:`TrainTransform`
  that maps a sample dict (image already normalised) to an augmented one; it also works on raw
  ``(image, mask)`` pairs when given to a dataset (see :mod:`bicorseg.data.transforms`).
* ``wrap_train_dataset(dataset, config, spec)``: the 4-image mosaic as a dataset wrapper
  (:class:`MosaicDataset`), applied before the per-sample transform; the dataset itself unchanged
  when ``mosaic_p`` is 0.

The steps, their order and the defaults (the published recipes) are documented in
:mod:`bicorseg.data.transforms`.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from bicorseg.data.transforms import AugmentConfig, MosaicDataset, TrainTransform
from bicorseg.spec import DatasetSpec

__all__ = ["AugmentConfig", "MosaicDataset", "TrainTransform", "build_train_transform", "wrap_train_dataset"]


def build_train_transform(config: AugmentConfig, spec: DatasetSpec | None = None) -> TrainTransform:
    """The per-sample augmentation (rescale, class-ratio crop, rot90, flips) of ``config``."""
    return TrainTransform(config, spec)


def wrap_train_dataset(dataset: Dataset, config: AugmentConfig, spec: DatasetSpec | None = None) -> Dataset:
    """``dataset`` with the mosaic of ``config`` (seeded with the config's seed + 1)."""
    if config.mosaic_p <= 0:
        return dataset
    # A seed distinct from the transform's, so mosaic choices and crops are not correlated.
    return MosaicDataset(
        dataset, config.mosaic_p, seed=config.seed + 1, ignore_index=config.ignore_index, spec=spec
    )
