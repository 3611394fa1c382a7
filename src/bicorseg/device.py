"""Where and how wide computation runs: the ``device`` parameter (``auto``, ``cpu``, ``cuda``,
``cuda:N``) and the ``threads`` parameter (torch's CPU threads per process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


def check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"must be a whole number of at least 1, got {threads!r}", key="threads")


def resolve_threads(threads: int | None) -> int:
    """``threads``, or torch's thread count now (by default one per core, or ``OMP_NUM_THREADS``)."""
    check_threads(threads)
    return torch.get_num_threads() if threads is None else threads


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's CPU thread count set to ``threads`` (None: as it is), then restore it.

    On a CPU the thread count changes how kernels split their sums, so results in the last bit
    depend on it: everything that must give the same bytes runs with one recorded count.
    """
    check_threads(threads)
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
