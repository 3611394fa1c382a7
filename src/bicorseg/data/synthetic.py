"""A deterministic procedural dataset for tests and smoke runs (no files, no Lightning).

Sample ``i`` is the same on every call and every process: blocky label maps, class-coloured noisy
images, a one-pixel ignored border. It needs nothing on disk, so the training and evaluation
commands can be exercised end to end anywhere (``data.dataset: synthetic``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

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

    def sample_name(self, index: int) -> str:
        return f"synthetic_{index}"

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
