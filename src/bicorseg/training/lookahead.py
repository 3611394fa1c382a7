"""Lookahead (Zhang et al., 2019) around any torch optimizer, with a complete ``state_dict``.

The wrapped ("fast") optimizer takes every step; at a synchronisation the slow weights move
``alpha`` of the way towards the fast weights, and the fast weights are reset to them. The published
recipes use AdamW inside Lookahead(k=5, alpha=0.5). Two phases of the schedule (``phase``):

* ``textbook`` (Zhang et al.): the slow weights start as the parameters before the first step;
  synchronisations after fast steps k, 2k, 3k, ... (5, 10, 15, ...).
* ``paper``: the original code's (catalyst's ``Lookahead``, whose per-group counter synchronises
  when it is 0 and then counts up to k): the slow weights are copied from the fast weights after
  the first fast step (a synchronisation that changes nothing), then synchronisations follow every
  k steps from there: after steps 1, k + 1, 2k + 1, ... (1, 6, 11, ...), one step later than the
  textbook form.

The wrapper shares ``param_groups`` with the inner optimizer, so learning-rate schedulers act on
both. ``state_dict()`` holds the inner optimizer's state, the slow weights and the step counter, so
a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from bicorseg.errors import CheckpointError, ConfigError
from bicorseg.training.config import LOOKAHEAD_PHASES as PHASES
from bicorseg.typedconfig import check_choice


class Lookahead(Optimizer):
    """Lookahead over ``base`` (see module docstring)."""

    def __init__(self, base: Optimizer, k: int = 5, alpha: float = 0.5, phase: str = "textbook") -> None:
        if k < 1:
            raise ConfigError(f"Lookahead k must be at least 1, got {k}", key="k")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"Lookahead alpha must be in (0, 1], got {alpha}", key="alpha")
        check_choice("phase", phase, PHASES)
        self.base = base
        self.k = k
        self.alpha = alpha
        self.phase = phase
        self.fast_steps = 0
        super().__init__(base.param_groups, base.defaults)
        # share the very same group dicts (and list) so schedulers and the base see one learning rate
        self.param_groups = base.param_groups

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _init_slow(self) -> None:
        for p in self._parameters():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()

    @torch.no_grad()
    def _sync(self) -> None:
        for p in self._parameters():
            slow = self.state[p]["slow"]
            slow.add_(p.detach() - slow, alpha=self.alpha)
            p.copy_(slow)

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        if self.phase == "textbook":
            self._init_slow()  # the parameters before this step
        loss = self.base.step(closure)
        self.fast_steps += 1
        if (self.fast_steps - (self.phase == "paper")) % self.k == 0:
            self._init_slow()  # paper: the fast weights after the first step
            self._sync()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        params = self._parameters()
        return {
            "base": self.base.state_dict(),
            "slow": [self.state[p]["slow"] if "slow" in self.state[p] else None for p in params],
            "fast_steps": self.fast_steps,
            "k": self.k,
            "alpha": self.alpha,
            "phase": self.phase,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if "base" not in state_dict or "slow" not in state_dict:
            raise CheckpointError("not a Lookahead state dict (keys 'base' and 'slow' are expected)")
        # the run's own settings stay: a checkpoint that was made with others is refused
        saved = (state_dict.get("k"), state_dict.get("alpha"), state_dict.get("phase"))
        if saved != (self.k, self.alpha, self.phase):
            raise CheckpointError(
                f"the Lookahead state was saved with k={saved[0]!r}, alpha={saved[1]!r}, phase={saved[2]!r}; "
                f"this run has k={self.k}, alpha={self.alpha}, phase={self.phase}"
            )
        params = self._parameters()
        if len(state_dict["slow"]) != len(params):
            raise CheckpointError(
                f"the Lookahead state has {len(state_dict['slow'])} slow weights for {len(params)} parameters"
            )
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups  # load_state_dict rebuilt the base's groups
        for p, slow in zip(params, state_dict["slow"]):
            self.state[p].pop("slow", None)
            if slow is not None:
                self.state[p]["slow"] = slow.detach().to(device=p.device, dtype=p.dtype).clone()
        self.fast_steps = int(state_dict["fast_steps"])
