"""What prediction needs to know about a model besides its function: classes, bands, dataset facts,
identity, and the tile size it is meant to be applied with.

:class:`ModelInfo` sits below both the PyTorch predictor and the ONNX runtime wrapper
(:mod:`bicorseg.inference.onnx`), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from bicorseg.defaults import default_class_names, default_palette
from bicorseg.models.hub import Tiling
from bicorseg.spec import DatasetSpec


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a model besides its function."""

    num_classes: int
    in_channels: int
    dataset: DatasetSpec | None
    source: str  # the checkpoint, for messages
    sha256: str | None = None  # content hash of the checkpoint file, recorded in the outputs
    tiling: Tiling = field(default_factory=Tiling)  # the default tile size and overlap

    @property
    def palette(self) -> np.ndarray:
        """RGB colour per class (the dataset's, or the default palette for a bare model)."""
        palette = self.dataset.palette if self.dataset is not None else default_palette(self.num_classes)
        return np.asarray(palette, np.uint8)

    @property
    def class_names(self) -> list[str]:
        if self.dataset is not None:
            return list(self.dataset.class_names)
        return list(default_class_names(self.num_classes))


def model_info(model: nn.Module, source: str = "the model", tiling: Tiling | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a :class:`~bicorseg.models.BiCoRSeg` (``tiling``: from its checkpoint)."""
    return ModelInfo(
        model.config.num_classes, model.config.in_channels, model.dataset, source, tiling=tiling or Tiling()
    )
