"""bicorseg: BiCoR-Seg semantic segmentation for high-resolution remote sensing imagery.

The public API is small:

* :class:`ModelConfig` and :class:`BiCoRSeg`: the network.
* :class:`LossConfig` and :class:`BiCoRSegLoss`: the training objective.
* :class:`DatasetSpec`: dataset facts (classes, palette, bands, normalisation).
* :func:`load_model` / :func:`load_checkpoint` / :func:`save_checkpoint`: self-describing checkpoints.
"""

__version__ = "0.1.0"

from bicorseg.checkpoint import load_checkpoint, load_model, save_checkpoint
from bicorseg.losses import BiCoRSegLoss, LossConfig
from bicorseg.models import BiCoRSeg, ModelConfig
from bicorseg.spec import DatasetSpec

__all__ = [
    "BiCoRSeg",
    "BiCoRSegLoss",
    "DatasetSpec",
    "LossConfig",
    "ModelConfig",
    "__version__",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
