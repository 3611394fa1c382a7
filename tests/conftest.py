"""Shared test fixtures: the real samples in ../shared (skipped when absent) and tiny model configs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from bicorseg.models import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BICORSEG_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is absent (as on a user's machine)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared sample data")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path("data")


@pytest.fixture
def parity_dir() -> Path:
    return shared_path("parity")


def tiny_config(**overrides) -> ModelConfig:
    """A small random-weight model for CPU tests: ConvNeXt-nano backbone, C = 32."""
    options = dict(num_classes=4, backbone="convnext_nano", width=32, layers=2, min_pixels=4)
    options.update(overrides)
    return ModelConfig(**options)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole session (the Ray tests are slow), shut down at the end."""
    ray = pytest.importorskip("ray")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    for number, handler in handlers.items():  # Ray's SIGTERM handler would outlive the fixture's tests
        signal.signal(number, handler)
    yield ray
    ray.shutdown()
