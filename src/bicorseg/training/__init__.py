"""The Lightning layer: typed configs, the LightningModule, the data module, Lookahead, the ``train`` run.

This is the only part of bicorseg that imports Lightning; the names below are imported lazily so that
``bicorseg.training.config`` stays cheap to use.
"""

from __future__ import annotations

from bicorseg.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "bicorseg.training.config",
    "DataConfig": "bicorseg.training.config",
    "OptimizerConfig": "bicorseg.training.config",
    "TrainerConfig": "bicorseg.training.config",
    "load_config": "bicorseg.training.config",
    "build_config": "bicorseg.training.config",
    "Lookahead": "bicorseg.training.lookahead",
    "BiCoRSegModule": "bicorseg.training.module",
    "NonFiniteError": "bicorseg.training.module",
    "SegmentationDataModule": "bicorseg.training.datamodule",
    "train": "bicorseg.training.run",
    "TrainResult": "bicorseg.training.run",
    "AtomicCheckpointIO": "bicorseg.training.run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
