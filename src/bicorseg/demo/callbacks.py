"""The demo's Lightning callback: :class:`StepProgress`, a rich progress bar over the steps, with the loss.

The only demo module that imports Lightning (:mod:`bicorseg.demo.pipeline` imports this one when it
trains, so ``bicorseg demo --help`` and the pipeline's own code stay Lightning-free). The demo's
learning-rate schedule (warm-up, then a cosine over its steps) and its time limit are the training
layer's own (``optimizer.warmup_steps``, ``trainer.max_steps``, ``trainer.max_minutes``:
:mod:`bicorseg.training.budget`), as for any run.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from rich.progress import Progress


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
