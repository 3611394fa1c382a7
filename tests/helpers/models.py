"""Tiny random-weight models for CPU tests (no weights are ever downloaded)."""

from __future__ import annotations

from typing import Any

from bicorseg.models import ModelConfig


def tiny_config(**overrides: Any) -> ModelConfig:
    """A small random-weight model for CPU tests: ConvNeXt-nano backbone, C = 32."""
    options: dict[str, Any] = dict(num_classes=4, backbone="convnext_nano", width=32, layers=2, min_pixels=4)
    options.update(overrides)
    return ModelConfig(**options)
