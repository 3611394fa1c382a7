"""What a training run shows while it runs: plain log lines for files and pipes, a tidy bar in a terminal.

* :class:`LogLines` writes the data module's summary when there is one (a geo dataset's rasters,
  labels and labelled pixels per class in training and validation), a line when the run starts
  (samples, steps, model, device), one every
  ``trainer.log_every_n_steps`` optimizer steps and one per epoch, each with every loss term, the
  learning rate and the throughput, and after a validation its mIoU, mean F1, OA and per-class table.
  Plain text, flushed at once: no carriage returns, no colour codes, so ``nohup``, SLURM and CI
  logs show the run as it goes. Only the first process writes.
* :class:`TidyProgressBar`: in a terminal, Lightning's rich bar on stderr showing ``loss`` and
  ``mIoU`` only (no ``v_num``, no long metric names wrapping over several lines), epochs counted
  from 1 as in the lines; the epoch and validation lines print above it.
* :func:`quiet_lightning`: Lightning's own info lines (device summary, advertisements, "fit
  stopped") are silenced for the run; its warnings still show.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.callbacks import Callback, RichProgressBar

from bicorseg.metrics import format_report


class LogLines(Callback):
    """Plain progress lines on stderr; ``steps=False`` writes only the start and epoch lines."""

    def __init__(self, every: int, steps: bool = True) -> None:
        self.every = every
        self.steps = steps
        self._last_step = -1
        self._line_time = self._epoch_time = 0.0
        self._line_samples = self._epoch_samples = 0
        self._lr = ""
        self._val_start = 0.0
        self._val_line = self._val_epoch = 0.0  # validation seconds since the last line / in this epoch

    # --- writing ---------------------------------------------------------------------------------

    def write(self, trainer: Any, text: str) -> None:
        if not trainer.is_global_zero:
            return
        for line in text.splitlines():
            sys.stderr.write(line.replace("\r", "") + "\n")
        sys.stderr.flush()

    @staticmethod
    def _terms(trainer: Any, suffix: str) -> str:
        metrics = trainer.callback_metrics
        keys = [k for k in metrics if k.startswith("train/") and k.endswith(suffix)]
        keys.sort(key=lambda k: k != f"train/total{suffix}")  # the total first, then the terms as logged
        return ", ".join(
            f"{k.removeprefix('train/').removesuffix(suffix)} {float(metrics[k]):.4g}" for k in keys
        )

    @staticmethod
    def _rate(samples: int, seconds: float) -> str:
        return f"{samples / seconds:.1f} samples/s" if seconds > 0 and samples else ""

    def _epoch_of(self, trainer: Any) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"{trainer.current_epoch + 1}/{total}"

    # --- hooks -----------------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        data, config, model = trainer.datamodule, pl_module.config, pl_module.config.model
        if data.summary:  # what the data is (geo datasets: labelled pixels)
            self.write(trainer, "\n".join(data.summary))
        parts = [
            f"{len(data.train_set)} training samples",
            f"batch {config.data.batch_size} x {trainer.world_size} process(es)",
            f"{trainer.num_training_batches} batches per epoch",
            f"{trainer.max_epochs} epochs"
            + (f", at most {trainer.max_steps} steps" if trainer.max_steps > 0 else ""),
            "no validation"
            if data.val_set is None
            else f"{len(data.val_set)} validation samples of split {config.data.val_split!r}",
        ]
        params = sum(p.numel() for p in pl_module.parameters())
        self.write(
            trainer,
            f"training: {', '.join(parts)}; model: {model.backbone}, width {model.width}, {model.layers} HBIS "
            f"layers, {params / 1e6:.2f} M parameters; device: {trainer.strategy.root_device.type} x "
            f"{trainer.world_size}",
        )
        if data.val_set is not None and config.data.holds_out:
            names = [data.val_set.sample_name(i) for i in range(len(data.val_set))]
            shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
            self.write(trainer, f"held out for validation (never trained on): {shown}")
        self._line_time = self._epoch_time = time.perf_counter()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_time = time.perf_counter()
        self._epoch_samples = 0
        self._val_epoch = 0.0

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        seconds = time.perf_counter() - self._val_start
        self._val_line += seconds
        self._val_epoch += seconds

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        size = batch["image"].shape[0]
        self._line_samples += size * trainer.world_size
        self._epoch_samples += size * trainer.world_size
        # the rate this step used (an epoch schedule steps at its end)
        self._lr = f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}"
        step = trainer.global_step
        if not self.steps or step == self._last_step or step % self.every:
            return
        self._last_step = step
        now = time.perf_counter()
        fields = [
            self._terms(trainer, "_step"),
            self._lr,
            self._rate(self._line_samples, now - self._line_time - self._val_line),
        ]
        self.write(
            trainer, f"step {step} (epoch {self._epoch_of(trainer)}): " + "; ".join(f for f in fields if f)
        )
        self._line_time, self._line_samples, self._val_line = now, 0, 0.0

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        seconds = time.perf_counter() - self._epoch_time - self._val_epoch  # training only
        fields = [self._terms(trainer, "_epoch"), self._lr, self._rate(self._epoch_samples, seconds)]
        took = f"{seconds:.0f} s" + (f" + {self._val_epoch:.0f} s validation" if self._val_epoch else "")
        head = f"epoch {self._epoch_of(trainer)} done (step {trainer.global_step}, {took})"
        self.write(trainer, f"{head}: " + "; ".join(f for f in fields if f))
        report = pl_module.last_val_report
        if report is not None and report.convention.extra.get("epoch") == trainer.current_epoch:
            s = report.scores
            self.write(
                trainer,
                f"validation after epoch {trainer.current_epoch + 1} ({report.convention.split or 'val'}): "
                f"mIoU {100 * s.miou:.2f} %, mean F1 {100 * s.mean_f1:.2f} %, OA {100 * s.oa:.2f} %",
            )
            table = format_report(report, convention=False)
            self.write(trainer, "\n".join(f"  {line}" for line in table.splitlines()))


class TidyProgressBar(RichProgressBar):
    """Lightning's rich progress bar on stderr with two short metrics: ``loss`` and ``mIoU``."""

    def __init__(self) -> None:
        super().__init__(console_kwargs={"stderr": True})
        self.shown = {"train/total_step": "loss", "val/miou": "mIoU"}

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        return {short: items[key] for key, short in self.shown.items() if key in items}

    def _get_train_description(self, current_epoch: int) -> str:
        """``Epoch 1/45``: counted from 1, as the log lines count (Lightning's own bar counts from 0)."""
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
        return f"{text:{len(self.validation_description)}}"


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines off (device summary, tips, "fit stopped"), its warnings kept."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
