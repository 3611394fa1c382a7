"""The demo's Lightning callbacks: its learning-rate schedule, its time limit and its progress bar.

The only demo module that imports Lightning (:mod:`bicorseg.demo.pipeline` imports this one when it
trains, so ``bicorseg demo --help`` and the pipeline's own code stay Lightning-free).

* :class:`StepSchedule`: linear warm-up, then a cosine from ``lr`` to ``min_lr`` over the fixed
  number of steps (per step; the training layer's own schedule is per epoch).
* Lightning's :class:`~lightning.pytorch.callbacks.Timer`: stops training when its share of the
  time budget is spent, on a machine too slow for the fixed number of steps.
* :class:`StepProgress`: a rich progress bar over the steps, with the loss.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, Timer
from rich.progress import Progress


class StepSchedule(Callback):
    """Warm-up over ``warmup`` steps, then a cosine from ``lr`` to ``min_lr`` at step ``steps``."""

    def __init__(self, lr: float, min_lr: float, steps: int, warmup: int) -> None:
        self.lr, self.min_lr, self.steps, self.warmup = lr, min_lr, steps, max(warmup, 1)

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        share = min(step / self.steps, 1.0)
        cosine = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * share))
        return cosine * min(1.0, (step + 1) / self.warmup)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:
        lr = self.rate(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr


class StepProgress(Callback):
    """A progress bar over the training steps, with the current loss."""

    def __init__(self, progress: Progress, steps: int) -> None:
        self.progress, self.steps = progress, steps
        self.task = progress.add_task("training (steps)", total=steps, info="")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        info = f"step {trainer.global_step}"
        if isinstance(loss, torch.Tensor):
            info += f"  loss {float(loss.detach()):.3f}"
        self.progress.update(self.task, completed=min(trainer.global_step, self.steps), info=info)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        info = "" if trainer.global_step >= self.steps else "stopped by the time budget"
        self.progress.update(self.task, info=info)


def demo_callbacks(
    progress: Progress, steps: int, seconds: float, lr: float, min_lr: float, warmup: int
) -> list[Callback]:
    """The callbacks of a demo training run of ``steps`` steps with ``seconds`` at most."""
    return [
        StepSchedule(lr, min_lr, steps, warmup),
        Timer(duration=timedelta(seconds=seconds), interval="step", verbose=False),
        StepProgress(progress, steps),
    ]
