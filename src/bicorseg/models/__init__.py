"""BiCoR-Seg networks: backbones, the fused neck, HBIS layers and the full model."""

from bicorseg.models.backbone import adapt_first_conv_weight, build_backbone
from bicorseg.models.bicorseg import BiCoRSeg, ModelConfig, TrainOutput
from bicorseg.models.hbis import HBISLayer, PixelSelection, pixel_weights
from bicorseg.models.neck import FusedNeck

__all__ = [
    "BiCoRSeg",
    "FusedNeck",
    "HBISLayer",
    "ModelConfig",
    "PixelSelection",
    "TrainOutput",
    "adapt_first_conv_weight",
    "build_backbone",
    "pixel_weights",
]
