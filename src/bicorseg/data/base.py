"""The sample contract shared by bicorseg's torch datasets: load, augment, normalise.

A subclass implements :meth:`SegmentationDataset.load_arrays` (raw image ``bands x H x W`` in its
native dtype and an ``H x W`` index mask, or None) and :meth:`SegmentationDataset.sample_name`. The
base class turns them into ``{"image": float32 bands x H x W, (x - spec.mean) / spec.std,
"mask": int64 H x W (ignored pixels = spec.ignore_index), "name": str, "path": str}``.

The optional ``transform`` (the training augmentation, :class:`~bicorseg.data.transforms.TrainTransform`,
bound to the dataset's ignore index) sees the raw image (float32, still in input units) and the int64
mask, with access to the whole dataset for mosaics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bicorseg.data.io import check_finite
from bicorseg.data.release.records import Manifest
from bicorseg.data.transforms import Pair, TrainTransform
from bicorseg.errors import InputError
from bicorseg.spec import DatasetSpec, normalise


class SegmentationDataset(Dataset):
    """Base of the bicorseg datasets: subclasses load raw arrays, this class does the rest."""

    spec: DatasetSpec

    def __init__(self, spec: DatasetSpec, transform: TrainTransform | None = None) -> None:
        self.spec = spec
        self.transform = None if transform is None else transform.for_spec(spec)

    # -- to implement ------------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw image (``bands x H x W``, native dtype) and index mask (``H x W``) or None."""
        raise NotImplementedError

    def sample_name(self, index: int) -> str:
        raise NotImplementedError

    def sample_path(self, index: int) -> str:
        return self.sample_name(index)

    # -- provided ----------------------------------------------------------------------------------
    def load_tensors(self, index: int) -> Pair:
        """Image as float32 in input units and mask as int64 (all ignore when there is no mask)."""
        image, mask = self.load_arrays(index)
        path = self.sample_path(index)
        if image.ndim != 3 or image.shape[0] != self.spec.num_bands:
            raise InputError(
                f"{path}: has {image.shape[0] if image.ndim == 3 else 1} band(s), the dataset expects "
                f"{self.spec.num_bands} ({', '.join(self.spec.bands)})"
            )
        check_finite(image, path)
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if mask is None:
            mask_t = torch.full(image.shape[1:], self.spec.ignore_index, dtype=torch.int64)
        else:
            if mask.shape != image.shape[1:]:
                raise InputError(
                    f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} px but the image is "
                    f"{image.shape[2]}x{image.shape[1]} px (width x height)"
                )
            mask_t = torch.from_numpy(mask.astype(np.int64))
        return image_t, mask_t

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        if self.transform is not None:
            image, mask = self.transform.sample(self.load_tensors, index, len(self))
        else:
            image, mask = self.load_tensors(index)
        return {
            "image": normalise(image, self.spec.mean, self.spec.std).contiguous(),
            "mask": mask.contiguous(),
            "name": self.sample_name(index),
            "path": self.sample_path(index),
        }


class SampleSelection(SegmentationDataset):
    """Chosen samples of one or more datasets (joined in order), as a dataset of their own.

    Its transform sees only these samples: a mosaic draws its other three images from the
    selection, so a sample left out (a validation sample) never reaches training inside a mosaic.

    Args:
        datasets: the datasets to join (one spec: the first one's).
        indices: positions in the joined datasets, in the order wanted; None for all.
        transform: the joint transform of this selection (the datasets' own are not used).
        cache_bytes: keep up to this many bytes of decoded images and masks in memory (in each
            process that loads samples), so that a small dataset is read and decoded once rather
            than every epoch; 0 for none. Cached arrays are handed out as copies.
    """

    def __init__(
        self,
        datasets: list[SegmentationDataset],
        indices: list[int] | None = None,
        transform: TrainTransform | None = None,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__(datasets[0].spec, transform)
        self.datasets = list(datasets)
        where = [(d, i) for d in self.datasets for i in range(len(d))]
        self._where = where if indices is None else [where[i] for i in indices]
        self.cache_bytes = cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self._where)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if index in self._cache:
            image, mask = self._cache[index]
            return image.copy(), None if mask is None else mask.copy()
        dataset, position = self._where[index]
        image, mask = dataset.load_arrays(position)
        size = image.nbytes + (0 if mask is None else mask.nbytes)
        if self._cached + size <= self.cache_bytes:
            self._cache[index] = (image.copy(), None if mask is None else mask.copy())
            self._cached += size
        return image, mask

    def sample_name(self, index: int) -> str:
        dataset, position = self._where[index]
        return dataset.sample_name(position)

    def sample_path(self, index: int) -> str:
        dataset, position = self._where[index]
        return dataset.sample_path(position)

    @property
    def manifest(self) -> Manifest | None:
        """The first dataset's manifest, for prepared data (None otherwise)."""
        return getattr(self.datasets[0], "manifest", None)
