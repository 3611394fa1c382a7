"""The --device option shared by evaluate, predict, heatmaps and submit."""

from __future__ import annotations

import pytest
import torch

from bicorseg.device import resolve_device
from bicorseg.errors import ConfigError, first_line


def test_auto_picks_a_gpu_only_when_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_names_and_missing_gpus_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^device: must be auto, cpu, cuda or cuda:N, got 'gpu0'$"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match=r"^device: cuda:1 asks for a GPU, but no CUDA GPU is available$"
        ):
            resolve_device("cuda:1")


def test_first_line_of_an_error() -> None:
    assert first_line(RuntimeError("disk full\ntraceback details")) == "disk full"
    assert first_line(ValueError()) == "ValueError"
