"""The ``train`` entry: a Lightning Trainer around the module, with the run folder laid out as::

    DIR/config.yaml                 the resolved configuration of this invocation
    DIR/checkpoints/best.ckpt       best validation score (``trainer.monitor``, higher is better)
    DIR/checkpoints/last.ckpt       the latest state: resume from it (``--resume auto``)
    DIR/logs/csv/metrics.csv        every logged loss term and metric
    DIR/logs/tensorboard/           the same for TensorBoard
    DIR/val_metrics.json            the latest validation report (convention included)

Checkpoints are written to a temporary file and renamed (:class:`AtomicCheckpointIO`), so an
interrupted run never leaves a half-written file; resuming restores weights, optimizer (Lookahead
included), scheduler, epoch and step.
"""

from __future__ import annotations

import csv
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from bicorseg.atomic import write_text_atomic
from bicorseg.checkpoint import atomic_torch_save, check_finite_weights, read_torch_file
from bicorseg.errors import CheckpointError
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import TrainConfig, dataset_spec
from bicorseg.training.datamodule import SegmentationDataModule
from bicorseg.training.module import BiCoRSegModule

BEST_NAME = "best"
LAST_NAME = "last"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes local checkpoints to a temporary name beside the target, then renames (with fsync)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        if "://" in str(path):  # remote storage: Lightning's own transactional writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read with ``weights_only=True`` whatever the caller asks: a checkpoint cannot run code."""
        if "://" in str(path):
            raise CheckpointError(f"cannot resume from remote checkpoint {path}: download it first")
        data = read_torch_file(path, map_location=map_location or "cpu")
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} is not a checkpoint (it holds a {type(data).__name__})")
        return data

    def remove_checkpoint(self, path: Any) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)


class ResumableCSVLogger(CSVLogger):
    """A CSV logger that continues the ``metrics.csv`` of a resumed run instead of replacing it.

    Rows logged after the checkpoint being resumed from (``step >= resume_step``) are dropped: the
    resumed run logs those steps again.
    """

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        rows, header = [], None
        if self._resume_step is not None and path.is_file():
            with open(path, newline="") as stream:
                reader = csv.DictReader(stream)
                header = list(reader.fieldnames or [])
                rows = [
                    r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < self._resume_step
                ]
            path.unlink()  # Lightning's writer deletes an existing file; we write it back below
        experiment = super().experiment
        if header:
            with open(path, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
            experiment.metrics_keys = header
        return experiment


@dataclass
class TrainResult:
    """Where a run left its outputs, and how far it got."""

    output: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_score: float | None
    monitor: str | None
    epoch: int
    global_step: int
    skipped_batches: int


def resolve_resume(resume: str | None, output: Path) -> str | None:
    """``auto`` -> ``DIR/checkpoints/last.ckpt`` when it exists; a path must exist."""
    if resume is None:
        return None
    if resume == "auto":
        last = output / "checkpoints" / f"{LAST_NAME}.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise CheckpointError(f"checkpoint to resume from not found: {resume}")
    return resume


def _checkpoint_step(path: str | None) -> int | None:
    if path is None:
        return None
    data = read_torch_file(path, mmap=True)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("global_step"), int)
        or "optimizer_states" not in data
    ):
        raise CheckpointError(
            f"{path} is not a training checkpoint of bicorseg train (no optimizer state to resume from); "
            "to fine-tune from its weights, set model.pretrained instead"
        )
    if isinstance(data.get("state_dict"), dict):
        check_finite_weights(data["state_dict"], path)
    return int(data["global_step"])


def build_trainer(
    config: TrainConfig,
    output: Path,
    has_validation: bool,
    callbacks: list[Callback] | None = None,
    find_unused_parameters: bool = False,
    resume_step: int | None = None,
) -> L.Trainer:
    """The Lightning Trainer of a run (loggers, checkpoints, strategy, precision)."""
    cfg = config.trainer
    monitor = cfg.monitor if has_validation else None
    checkpoint_dir = output / "checkpoints"
    all_callbacks: list[Callback] = [
        ModelCheckpoint(  # the latest state, for resuming
            dirpath=checkpoint_dir,
            filename=LAST_NAME,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=cfg.checkpoint_every_n_steps,
            enable_version_counter=False,
        ),
    ]
    if monitor is not None:
        all_callbacks.insert(
            0,
            ModelCheckpoint(
                dirpath=checkpoint_dir,
                filename=BEST_NAME,
                monitor=monitor,
                mode="max",
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
        )
    if cfg.progress_bar and sys.stderr.isatty():
        all_callbacks.append(RichProgressBar())
    all_callbacks.extend(callbacks or [])
    loggers: list[Any] = [
        ResumableCSVLogger(save_dir=str(output), name="logs", version="csv", resume_step=resume_step)
    ]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(output), name="logs", version="tensorboard"))
    strategy: Any = cfg.strategy
    if cfg.strategy == "ddp":
        strategy = DDPStrategy(find_unused_parameters=find_unused_parameters)
    elif cfg.strategy == "ddp_spawn":
        strategy = DDPStrategy(start_method="spawn", find_unused_parameters=find_unused_parameters)
    precision = "32-true" if cfg.precision == "32" else cfg.precision
    return L.Trainer(
        default_root_dir=str(output),
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches if has_validation else 0,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=precision,
        deterministic=cfg.deterministic,
        log_every_n_steps=cfg.log_every_n_steps,
        check_val_every_n_epoch=cfg.check_val_every_n_epoch,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        logger=loggers,
        callbacks=all_callbacks,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=cfg.progress_bar,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
    )


def train(
    config: TrainConfig,
    output: str | Path,
    resume: str | None = None,
    spec: DatasetSpec | None = None,
    model: nn.Module | None = None,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Train (or resume) a run described by ``config``, writing everything under ``output``."""
    output = Path(output)
    spec = spec or dataset_spec(config.data, config.model.to_dict())
    ckpt_path = resolve_resume(resume, output)
    if rank_zero_only.rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output / "config.yaml", config.to_yaml())
        # temporary files of a run that was killed while writing a checkpoint
        for stale in (output / "checkpoints").glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    if config.trainer.num_threads is not None:
        torch.set_num_threads(config.trainer.num_threads)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    datamodule = SegmentationDataModule(config.data, spec, seed=config.trainer.seed)
    module = BiCoRSegModule(config, spec, model=model, output_dir=output)
    has_validation = config.data.val_split is not None and config.trainer.limit_val_batches != 0
    trainer = build_trainer(
        config,
        output,
        has_validation,
        callbacks,
        # without the auxiliary loss the static classifier gets no gradient
        find_unused_parameters=config.loss.aux_weight == 0,
        resume_step=_checkpoint_step(ckpt_path),
    )
    with warnings.catch_warnings():
        # expected on CPU and with small datasets; they say nothing about this run being wrong
        for pattern in (
            r".*does not have many workers.*",
            r".*Experiment logs directory .* exists and is not empty.*",
            r".*Checkpoint directory .* exists and is not empty.*",
            r".*The number of training batches .* is smaller than the logging interval.*",
        ):
            warnings.filterwarnings("ignore", message=pattern)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    best_cb = next(
        (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    last = output / "checkpoints" / f"{LAST_NAME}.ckpt"
    best_path = Path(best_cb.best_model_path) if best_cb is not None and best_cb.best_model_path else None
    best_score = (
        float(best_cb.best_model_score)
        if best_cb is not None and best_cb.best_model_score is not None
        else None
    )
    return TrainResult(
        output=output,
        best_checkpoint=best_path,
        last_checkpoint=last if last.is_file() else None,
        best_score=best_score,
        monitor=best_cb.monitor if best_cb is not None else None,
        epoch=trainer.current_epoch,
        global_step=trainer.global_step,
        skipped_batches=module.skipped_batches,
    )
