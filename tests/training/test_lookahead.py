"""Lookahead against a hand-written reference, with a scheduler, and across a state_dict round trip."""

from __future__ import annotations

import copy

import torch

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


def test_scheduler_and_state_dict_round_trip() -> None:
    model, x, y = _problem()

    def build(m: torch.nn.Module) -> tuple[Lookahead, torch.optim.lr_scheduler.LRScheduler]:
        opt = Lookahead(torch.optim.AdamW(m.parameters(), lr=0.1), k=5, alpha=0.5)
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
