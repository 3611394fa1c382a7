"""Global-batch statistics under data-parallel training, with gradients that stay exact.

Data-parallel training (one process per device) averages gradients across processes. A loss built
from statistics of the *global* batch (the Fisher class means, the Dice sums) therefore needs two
things: the statistic gathered from every process, and a gradient that flows into the local part
only, scaled by the world size so that the averaging restores the single-process gradient. With one
process (or no process group) these functions return their input unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _scaled_local(x: torch.Tensor, size: int) -> torch.Tensor:
    # value x, gradient size * dx: cancels the 1/size of gradient averaging
    return x * size - x.detach() * (size - 1)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) along dim 0 across processes, in rank order."""
    size = world_size()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = _scaled_local(x, size)
    return torch.cat(parts, dim=0)


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over processes; the gradient reaches the local ``x`` (see module docstring)."""
    size = world_size()
    if size == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total - x.detach() + _scaled_local(x, size)
