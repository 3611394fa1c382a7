"""Data: dataset declarations, image and label I/O, ``prepare``, torch datasets and augmentation.

Entry points:

* :func:`get_spec` / :func:`get_release`: the declared datasets (Vaihingen, Potsdam, LoveDA).
* :func:`prepare`: turn an official release into patches and a manifest (``bicorseg prepare``;
  the steps are the package :mod:`bicorseg.data.release`).
* :func:`build_dataset`: a torch dataset over prepared data or a custom folder; samples are
  ``{"image": float32 bands x H x W normalised, "mask": int64 H x W, "name": str, "path": str}``.
* :class:`TrainTransform` / :class:`AugmentConfig`: the training augmentation of the published
  recipes (docs/METHOD.md, section 6), mosaic included (the datasets give the transform access to
  their other samples).
* :func:`read_image` / :func:`read_mask`: raw arrays from PNG, JPEG or GeoTIFF.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from bicorseg.data.base import SegmentationDataset
from bicorseg.data.datasets import DATASETS, get_release, get_spec
from bicorseg.data.folder import ClassTable, FolderDataset
from bicorseg.data.io import read_image, read_mask
from bicorseg.data.labels import LabelTable
from bicorseg.data.patches import PreparedDataset
from bicorseg.data.release import prepare
from bicorseg.data.transforms import AugmentConfig, TrainTransform
from bicorseg.errors import ConfigError
from bicorseg.spec import DatasetSpec


def build_dataset(
    kind: str,
    root: str | os.PathLike,
    split: str,
    spec: DatasetSpec | None = None,
    transform: TrainTransform | None = None,
    **options: Any,
) -> Dataset:
    """A torch dataset: ``kind`` is a declared dataset (``root`` = output of ``prepare``) or ``"folder"``.

    Prepared data: ``split`` is a prepared split, or several joined by ``+`` (``"train+val"``).
    Folder data: ``options`` go to :meth:`FolderDataset.for_split` (``images``, ``masks``,
    ``class_table``, ``splits``, ``mask_suffix``, ``require_masks``).
    """
    if kind == "folder":
        return FolderDataset.for_split(root, split, spec=spec, transform=transform, **options)
    if kind in DATASETS:
        if options:
            raise ConfigError(f"dataset {kind}: unexpected options {', '.join(sorted(options))}")
        return PreparedDataset(root, split, spec=spec, transform=transform, dataset=kind)
    raise ConfigError(f"unknown dataset kind {kind!r} (choose from {', '.join([*DATASETS, 'folder'])})")


__all__ = [
    "AugmentConfig",
    "ClassTable",
    "FolderDataset",
    "LabelTable",
    "SegmentationDataset",
    "TrainTransform",
    "build_dataset",
    "get_release",
    "get_spec",
    "prepare",
    "read_image",
    "read_mask",
]
