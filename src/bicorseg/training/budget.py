"""The run's budget: its learning-rate schedule laid over its steps and its time, and its end.

:class:`RunBudget` is Lightning's :class:`~lightning.pytorch.callbacks.Timer` (the clock of the run,
validation included, kept in checkpoints so that a resumed run continues it) with two more jobs:

* **The learning rate, every step** (when :attr:`TrainConfig.schedule_per_step`): a linear warm-up,
  then a cosine from ``lr`` to ``min_lr`` over the run's *progress*, the larger of the share of the
  planned steps done and the share of the time budget used. A run bounded by its steps anneals
  exactly as planned, whatever the machine; a run that the time budget ends first anneals over the
  time it has, instead of stopping with the learning rate still high. Both shares count the step
  about to run (for the time, its expected duration: the step before it), so that the last step
  takes the floor ``min_lr``. Progress never goes back: a slow step (an epoch's first, waiting for
  its data) followed by a fast one would otherwise lower the time estimate and raise the rate.
* **A validation at the end**: when the time budget, ``max_steps`` or ``max_epochs`` ends the run
  in the middle of the validation period (``check_val_every_n_epoch``), the final model is
  validated all the same, so that ``val_metrics.json`` and ``best.ckpt`` see the model the whole
  schedule made.

Without a time budget, the clock only runs (the Timer's ``duration`` is None).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Timer

from bicorseg.training.config import TrainConfig


def scheduled_rate(
    progress: float, step: int, lr: float, min_lr: float, warmup: int, cosine: bool = True
) -> float:
    """The learning rate at ``progress`` (0 to 1) of the run and optimizer step ``step`` (0-based)."""
    share = min(max(progress, 0.0), 1.0)
    rate = min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * share)) if cosine else lr
    return rate * min(1.0, (step + 1) / max(warmup, 1))


class RunBudget(Timer):
    """The run's clock and time limit, its per-step learning rate and its final validation (see module)."""

    def __init__(self, config: TrainConfig) -> None:
        minutes = config.trainer.max_minutes
        super().__init__(
            duration=None if minutes is None else timedelta(minutes=minutes), interval="step", verbose=False
        )
        self.per_step = config.schedule_per_step
        self.cosine = config.optimizer.schedule == "cosine"
        self.lr, self.min_lr = config.optimizer.lr, config.optimizer.min_lr
        self.warmup = config.optimizer.warmup_steps
        self.planned_steps = math.inf
        self._step_seconds = 0.0  # the latest step's duration, the estimate of the next one's
        self._step_started: float | None = None
        self._progress = 0.0  # the furthest progress reached, so that the rate never rises again

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.planned_steps = float(trainer.estimated_stepping_batches)

    def progress(self, step: int) -> float:
        """How far the run will be at the end of optimizer step ``step`` (0-based): steps or time, the larger."""
        steps = (step + 1) / self.planned_steps if math.isfinite(self.planned_steps) else 0.0
        if self._duration is not None:
            steps = max(steps, (self.time_elapsed() + self._step_seconds) / self._duration)
        self._progress = max(self._progress, steps)
        return self._progress

    def rate(self, step: int) -> float:
        return scheduled_rate(self.progress(step), step, self.lr, self.min_lr, self.warmup, self.cosine)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:
        self._step_started = time.monotonic()
        if not self.per_step:
            return
        lr = self.rate(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if self._step_started is not None:
            self._step_seconds = time.monotonic() - self._step_started
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)  # time up: should_stop
        at_max_steps = 0 < trainer.max_steps <= trainer.global_step
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        at_max_epochs = (
            last_batch and trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        if (trainer.should_stop or at_max_steps or at_max_epochs) and trainer.enable_validation:
            # Lightning validates the end of a run only in a validation epoch: make this one count
            trainer.should_stop = trainer.should_stop or at_max_steps
            trainer.check_val_every_n_epoch = 1
