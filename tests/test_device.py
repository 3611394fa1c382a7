"""The --device option shared by evaluate, predict, heatmaps and submit; --threads of predict,
evaluate and train."""

from __future__ import annotations

import pytest
import torch

from bicorseg.device import resolve_device, torch_threads
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


def test_threads_are_set_for_a_block_then_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None: as it is
        assert torch.get_num_threads() == before
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match=r"^threads: must be a whole number of at least 1"):
            with torch_threads(bad):
                pass


class _ThreadProbe(torch.nn.Module):
    """A per-pixel model that records torch's thread count at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.conv(x)


def test_evaluate_and_train_take_the_thread_count(capsys) -> None:
    from bicorseg.cli.main import main
    from bicorseg.data.synthetic import SyntheticSegmentation, synthetic_spec
    from bicorseg.evaluation import evaluate_model

    dataset = SyntheticSegmentation(2, 32, num_classes=2)
    probe = _ThreadProbe()
    before = torch.get_num_threads()
    with torch_threads(2):
        evaluate_model(probe, dataset, synthetic_spec(2), threads=1, batch_size=2)
        assert probe.seen == [1] and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    assert main(["train", "--config", "tiny-test", "--threads", "1", "--print-config"]) == 0
    assert "num_threads: 1" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--config",
                "tiny-test",
                "--threads",
                "1",
                "--trainer.num_threads",
                "2",
                "--print-config",
            ]
        )
        == 2
    )
    assert "--threads 1 and trainer.num_threads: give one of them" in capsys.readouterr().err
