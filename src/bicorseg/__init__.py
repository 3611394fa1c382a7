"""bicorseg: BiCoR-Seg semantic segmentation for high-resolution remote sensing imagery.

The public API is small:

* :func:`create_model` (by keywords), :class:`ModelConfig` (as data) and :class:`BiCoRSeg`: the network;
  ``model(x)`` gives logits in every mode, ``model.forward_train(x)`` what the objective needs.
* :class:`LossConfig` and :class:`BiCoRSegLoss`: the training objective.
* :class:`DatasetSpec`: dataset facts (classes, palette, bands, normalisation).
* :func:`load_model` / :func:`load_checkpoint` / :func:`save_checkpoint`: self-describing checkpoints;
  :class:`InferencePrecision`: a model run at bf16 or fp16 (what ``load_model(precision=...)`` gives).

The names are imported on first use: ``import bicorseg`` (and the ``bicorseg`` command's help) does
not load torch. It does watch the first import of torchvision, so that a torchvision built for
another torch is one line saying what to install (:mod:`bicorseg.torchvision_guard`).
"""

from __future__ import annotations

from bicorseg import torchvision_guard
from bicorseg.defaults import VERSION as __version__
from bicorseg.lazy import lazy_exports

_EXPORTS = {
    "BiCoRSeg": "bicorseg.models.bicorseg",
    "BiCoRSegLoss": "bicorseg.losses.objective",
    "DatasetSpec": "bicorseg.spec",
    "InferencePrecision": "bicorseg.precision",
    "LossConfig": "bicorseg.losses.config",
    "ModelConfig": "bicorseg.models.config",
    "create_model": "bicorseg.models.bicorseg",
    "load_checkpoint": "bicorseg.checkpoint",
    "load_model": "bicorseg.checkpoint",
    "save_checkpoint": "bicorseg.checkpoint",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)

torchvision_guard.install()


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
