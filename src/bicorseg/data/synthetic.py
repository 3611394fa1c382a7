"""A deterministic procedural dataset for tests and smoke runs (no files, no Lightning).

Sample ``i`` is the same on every call and every process: blocky label maps, class-coloured noisy
images, a one-pixel ignored border. It needs nothing on disk, so the training and evaluation
commands can be exercised end to end anywhere (``data.dataset: synthetic``).
"""

from __future__ import annotations

import numpy as np
import torch

from bicorseg.data.base import SegmentationDataset
from bicorseg.defaults import default_class_names, default_palette
from bicorseg.spec import DatasetSpec

SYNTHETIC_IGNORE = 255


def synthetic_spec(num_classes: int = 4, bands: int = 3) -> DatasetSpec:
    """Facts of the synthetic dataset: ``num_classes`` classes, ``bands`` normalised bands."""
    return DatasetSpec(
        name="synthetic",
        class_names=default_class_names(num_classes),
        palette=default_palette(num_classes),
        ignore_index=SYNTHETIC_IGNORE,
        eval_classes=tuple(range(num_classes)),
        bands=tuple(f"band_{i + 1}" for i in range(bands)),
        mean=(0.0,) * bands,
        std=(1.0,) * bands,
    )


class SyntheticSegmentation(SegmentationDataset):
    """Blocky label maps with class-coloured, noisy images; sample ``i`` is the same on every call.

    Samples follow :mod:`bicorseg.data.base` (the spec of :func:`synthetic_spec`, whose normalisation
    is the identity); masks have a one-pixel ignored border.
    """

    def __init__(self, count: int, size: int, num_classes: int, bands: int = 3, seed: int = 0) -> None:
        super().__init__(synthetic_spec(num_classes, bands))
        self.count, self.size, self.seed = count, size, seed
        self.colours = torch.randn(num_classes, bands, generator=torch.Generator().manual_seed(11))

    def __len__(self) -> int:
        return self.count

    def sample_name(self, index: int) -> str:
        return f"synthetic_{index}"

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        block = max(1, self.size // 8)
        cells = -(-self.size // block)
        coarse = torch.randint(0, self.spec.num_classes, (cells, cells), generator=generator)
        mask = (
            coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[: self.size, : self.size].clone()
        )
        noise = torch.randn(self.spec.num_bands, self.size, self.size, generator=generator)
        image = self.colours[mask].permute(2, 0, 1) + 0.7 * noise
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = SYNTHETIC_IGNORE
        return image.numpy(), mask.numpy()
