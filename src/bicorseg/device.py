"""The ``device`` parameter: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from bicorseg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``device`` value; a clear error for unknown names or a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"must be auto, cpu, cuda or cuda:N, got {name!r}", key="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name} asks for a GPU, but no CUDA GPU is available", key="device")
    return device
