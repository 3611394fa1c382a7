"""Torch datasets of chips cut on the fly from a :class:`~.source.GeoSource`.

* :class:`GeoTrainingChips`: every sample is a fresh window drawn by the split's
  :class:`~.split.TrainingWindows` (its length is the number of chips an epoch draws), read and
  labelled in memory; the training augmentation (rescale, crop, rotations, flips, mosaic) then cuts
  the crop from it. Draws come from a generator seeded like the augmentation's (seed, process rank,
  worker seed), so workers never repeat each other and a seeded run is reproducible.
* :class:`GeoWindows`: a fixed list of windows (the validation grid, or every window of an
  evaluation), padded to one size; labels outside ``areas`` (the validation area) are ignored.

A sample's name says where it lies: ``scene.tif row 512 col 1024``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rasterio.windows import Window

from bicorseg.data.base import SegmentationDataset
from bicorseg.data.geo.source import GeoSource
from bicorseg.data.geo.split import TrainingWindows
from bicorseg.data.transforms import SeededGenerator, TrainTransform
from bicorseg.gis.aoi import AreaOfInterest


def window_name(source: GeoSource, index: int, window: Window) -> str:
    return f"{source.rasters[index].name} row {int(window.row_off)} col {int(window.col_off)}"


def pad(source: GeoSource, image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad a window cut short by the raster's edge to ``size`` (image: band means, labels: ignored)."""
    height, width = labels.shape
    if height >= size and width >= size:
        return image, labels
    full = np.empty((image.shape[0], max(size, height), max(size, width)), np.float32)
    full[:] = np.asarray(source.spec.mean, np.float32)[:, None, None]
    full[:, :height, :width] = image
    mask = np.full(full.shape[1:], source.ignore_index, np.uint8)
    mask[:height, :width] = labels
    return full, mask


class GeoTrainingChips(SegmentationDataset):
    """``length`` training chips per epoch, each a window drawn by ``windows`` (see the module docstring)."""

    def __init__(
        self,
        source: GeoSource,
        windows: TrainingWindows,
        length: int,
        transform: TrainTransform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(source.spec, transform)
        self.source, self.windows, self.length = source, windows, int(length)
        self._random = SeededGenerator(seed)
        self.drawn: dict[int, tuple[int, Window]] = {}  # the window this process drew last per sample

    def __len__(self) -> int:
        return self.length

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        uniforms = torch.rand(3, generator=self._random.get(), dtype=torch.float64).tolist()
        self.drawn[index] = raster, window = self.windows.draw(uniforms)  # from this process's generator
        return pad(self.source, *self.source.read(raster, window), self.windows.size)

    def sample_name(self, index: int) -> str:
        return window_name(self.source, *self.drawn[index]) if index in self.drawn else f"chip {index}"


class GeoWindows(SegmentationDataset):
    """Fixed windows of ``size`` pixels (padded at the rasters' edges); labels outside ``areas`` ignored."""

    def __init__(
        self,
        source: GeoSource,
        windows: Sequence[tuple[int, Window]],
        size: int,
        areas: Sequence[AreaOfInterest | None] | None = None,
    ) -> None:
        super().__init__(source.spec)
        self.source, self.windows, self.size, self.areas = source, list(windows), int(size), areas

    def __len__(self) -> int:
        return len(self.windows)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        raster, window = self.windows[index]
        image, labels = self.source.read(raster, window)
        area = self.areas[raster] if self.areas is not None else None
        if area is not None:
            labels[~area.mask(int(window.row_off), int(window.col_off), *labels.shape)] = (
                self.source.ignore_index
            )
        return pad(self.source, image, labels, self.size)

    def sample_name(self, index: int) -> str:
        raster, window = self.windows[index]
        return window_name(self.source, raster, window)
