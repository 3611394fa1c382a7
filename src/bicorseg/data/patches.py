"""A torch dataset over the output of ``bicorseg prepare``, driven by its manifest.

``PreparedDataset(root, "train")`` lists the manifest's items of one split (``"train+val"`` joins
splits, as the LoveDA recipe trains on both); samples follow :mod:`bicorseg.data.base`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bicorseg.data.base import SegmentationDataset
from bicorseg.data.io import read_image, read_mask
from bicorseg.data.release.records import PatchRecord, read_manifest
from bicorseg.data.transforms import TrainTransform
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import DatasetSpec


class PreparedDataset(SegmentationDataset):
    """Patches of one or more prepared splits (``split`` like ``"train"`` or ``"train+val"``).

    ``spec`` defaults to the one stored in the manifest; a given spec must agree with it on classes,
    ignore index and band count (it may change the normalisation).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        spec: DatasetSpec | None = None,
        transform: TrainTransform | None = None,
        dataset: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        manifest = read_manifest(self.root)
        if dataset is not None and manifest.dataset != dataset:
            raise InputError(f"{self.root}: holds prepared {manifest.dataset} data, not {dataset}")
        try:
            stored = DatasetSpec.from_dict(manifest.spec)
        except (ConfigError, KeyError, TypeError) as error:
            raise InputError(f"{self.root}: the manifest's dataset facts are invalid ({error})") from None
        stored_facts = (stored.num_classes, stored.ignore_index, stored.num_bands)
        if spec is None:
            spec = stored
        elif (spec.num_classes, spec.ignore_index, spec.num_bands) != stored_facts:
            raise ConfigError(
                f"spec {spec.name!r} ({spec.num_classes} classes, ignore {spec.ignore_index}, "
                f"{spec.num_bands} bands) does not fit {self.root} ({stored.num_classes} classes, "
                f"ignore {stored.ignore_index}, {stored.num_bands} bands)"
            )
        super().__init__(spec, transform)
        self.manifest = manifest
        self.items: list[PatchRecord] = []
        for name in split.split("+"):
            if name not in manifest.splits:
                raise ConfigError(
                    f"{self.root}: no split {name!r} prepared (have {', '.join(manifest.splits) or 'none'})"
                )
            self.items.extend(manifest.splits[name].items)
        if not self.items:
            raise InputError(f"{self.root}: split {split!r} has no samples")

    def __len__(self) -> int:
        return len(self.items)

    def sample_name(self, index: int) -> str:
        return self.items[index].name

    def sample_path(self, index: int) -> str:
        return str(self.root / self.items[index].image)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        item = self.items[index]
        image = read_image(self.root / item.image)
        mask = read_mask(self.root / item.mask) if item.mask else None
        return image, mask
