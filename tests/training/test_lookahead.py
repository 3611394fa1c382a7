"""Lookahead against hand-written references (textbook and the original code's phase), with a
scheduler, and across a state_dict round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from bicorseg.errors import CheckpointError
from bicorseg.training.lookahead import Lookahead


def _problem() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    model = torch.nn.Linear(4, 2)
    return model, torch.randn(16, 4), torch.randn(16, 2)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def test_matches_reference_lookahead() -> None:
    model, x, y = _problem()
    reference = copy.deepcopy(model)
    optimizer = Lookahead(torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01), k=3, alpha=0.5)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.1, weight_decay=0.01)
    slow = [p.detach().clone() for p in reference.parameters()]
    for step in range(1, 8):
        _step(model, optimizer, x, y)
        _step(reference, ref_opt, x, y)
        if step % 3 == 0:
            with torch.no_grad():
                for s, p in zip(slow, reference.parameters()):
                    s += 0.5 * (p - s)
                    p.copy_(s)
        for p, r in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, r)


class CatalystLookahead:
    """A transcription of the original code's optimizer (catalyst.contrib.nn.Lookahead, k=5, alpha=0.5):
    a counter per parameter group; when it is 0 after a fast step, the slow weights (created from the
    fast weights the first time) move alpha towards the fast weights and the fast weights take them."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.param_groups = optimizer.param_groups
        self.state: dict = {}
        for group in self.param_groups:
            group["counter"] = 0

    def update(self, group: dict) -> None:
        for fast in group["params"]:
            param_state = self.state.setdefault(fast, {})
            if "slow_param" not in param_state:
                param_state["slow_param"] = torch.zeros_like(fast.data)
                param_state["slow_param"].copy_(fast.data)
            slow = param_state["slow_param"]
            slow += (fast.data - slow) * self.alpha
            fast.data.copy_(slow)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self.optimizer.step()
        for group in self.param_groups:
            if group["counter"] == 0:
                self.update(group)
            group["counter"] += 1
            if group["counter"] >= self.k:
                group["counter"] = 0


def test_paper_phase_matches_the_original_codes_lookahead() -> None:
    model, x, y = _problem()
    original = copy.deepcopy(model)
    textbook = copy.deepcopy(model)
    optimizer = Lookahead(torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01), phase="paper")
    reference = CatalystLookahead(torch.optim.AdamW(original.parameters(), lr=0.1, weight_decay=0.01))
    other = Lookahead(torch.optim.AdamW(textbook.parameters(), lr=0.1, weight_decay=0.01))
    synced: dict[str, list[int]] = {"paper": [], "textbook": []}
    for step in range(1, 14):
        _step(model, optimizer, x, y)
        _step(original, reference, x, y)
        _step(textbook, other, x, y)
        for p, r in zip(model.parameters(), original.parameters()):
            torch.testing.assert_close(p, r, rtol=0, atol=0)
        # right after a synchronisation the fast weights are the slow weights
        for name, (net, opt) in {"paper": (model, optimizer), "textbook": (textbook, other)}.items():
            if all(torch.equal(p, opt.state[p]["slow"]) for p in net.parameters() if "slow" in opt.state[p]):
                synced[name].append(step)
    assert synced == {"paper": [1, 6, 11], "textbook": [5, 10]}  # the original syncs one step later
    assert not all(torch.equal(p, t) for p, t in zip(model.parameters(), textbook.parameters()))
    assert optimizer.state_dict()["phase"] == "paper"


@pytest.mark.parametrize("phase", ["textbook", "paper"])
def test_scheduler_and_state_dict_round_trip(phase: str) -> None:
    model, x, y = _problem()

    def build(m: torch.nn.Module) -> tuple[Lookahead, torch.optim.lr_scheduler.LRScheduler]:
        opt = Lookahead(torch.optim.AdamW(m.parameters(), lr=0.1), k=5, alpha=0.5, phase=phase)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=1e-6)

    optimizer, scheduler = build(model)
    for _ in range(7):
        _step(model, optimizer, x, y)
    scheduler.step()
    assert optimizer.base.param_groups[0]["lr"] < 0.1  # the schedule reaches the inner optimizer
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt, saved_sched = copy.deepcopy(optimizer.state_dict()), scheduler.state_dict()

    for _ in range(6):  # the continuous run
        _step(model, optimizer, x, y)
    expected = [p.detach().clone() for p in model.parameters()]

    restored = torch.nn.Linear(4, 2)
    restored.load_state_dict(saved_model)
    opt2, sched2 = build(restored)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert opt2.fast_steps == 7
    assert opt2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for _ in range(6):
        _step(restored, opt2, x, y)
    for p, e in zip(restored.parameters(), expected):
        torch.testing.assert_close(p, e)


def test_a_state_saved_with_other_settings_is_refused() -> None:
    """A resumed run keeps its own k, alpha and phase: a state made with others (k=0 would divide
    by zero at the next step) is refused in one line."""
    model, x, y = _problem()
    optimizer = Lookahead(torch.optim.AdamW(model.parameters(), lr=0.1), k=5, alpha=0.5)
    _step(model, optimizer, x, y)
    state = copy.deepcopy(optimizer.state_dict())
    for key, value in (("k", 0), ("alpha", 0.8), ("phase", "paper")):
        other = Lookahead(torch.optim.AdamW(model.parameters(), lr=0.1), k=5, alpha=0.5)
        with pytest.raises(
            CheckpointError, match=rf"saved with .*{key}={value!r}.*; this run has k=5, alpha=0.5"
        ):
            other.load_state_dict({**state, key: value})
        assert other.fast_steps == 0
