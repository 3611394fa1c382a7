"""BiCoR-Seg networks: backbones, the fused neck, HBIS layers, the full model and its files (hub).

The names are imported on first use, so that :mod:`bicorseg.models.config` (the hyper-parameters)
is read without loading torch.
"""

from __future__ import annotations

from bicorseg.lazy import lazy_exports

_EXPORTS = {
    "BiCoRSeg": "bicorseg.models.bicorseg",
    "TrainOutput": "bicorseg.models.bicorseg",
    "create_model": "bicorseg.models.bicorseg",
    "ModelConfig": "bicorseg.models.config",
    "PixelSelection": "bicorseg.models.config",
    "FusedNeck": "bicorseg.models.neck",
    "HBISLayer": "bicorseg.models.hbis",
    "pixel_weights": "bicorseg.models.hbis",
    "adapt_first_conv_weight": "bicorseg.models.backbone",
    "build_backbone": "bicorseg.models.backbone",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
