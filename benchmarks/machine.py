"""The machine a benchmark ran on, as recorded in its JSON (imported by the benchmark scripts)."""

from __future__ import annotations

import os
import platform

import rasterio
import torch


def describe() -> dict:
    """CPUs, torch threads, platform, library versions and the load average at the time of the call."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "load_average_at_start": os.getloadavg(),
    }
