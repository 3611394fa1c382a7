"""The ``train`` entry: a Lightning Trainer around the module, with the run folder laid out as::

    DIR/config.yaml                 the resolved configuration of this invocation
    DIR/checkpoints/best.ckpt       best validation score (``trainer.monitor``, higher is better)
    DIR/checkpoints/last.ckpt       the latest state: resume from it (``resume="auto"``)
    DIR/logs/csv/metrics.csv        every logged loss term and metric
    DIR/logs/tensorboard/           the same for TensorBoard
    DIR/val_metrics.json            the latest validation report (convention included)

Checkpoints are written to a temporary file and renamed (:class:`AtomicCheckpointIO`), so an
interrupted run never leaves a half-written file; resuming restores weights, optimizer (Lookahead
included), scheduler, epoch and step. Lightning's ``ModelCheckpoint`` writes ``best.ckpt`` and
``last.ckpt``: the latter at the end of every epoch (after its validation), every
``trainer.checkpoint_every_n_steps`` optimizer steps if set, and, through :class:`LastState`, at
the end of training and when SIGINT or SIGTERM arrives; the signal then ends the run with
:class:`TrainingInterrupted`.

A folder that holds a run (any of :data:`RUN_FILES`) is refused unless the run is resumed or
replaced (``overwrite``), and so is one where any of them is a symbolic link (the run would write
through it, out of its folder). Nothing is written before the run has started: the configuration,
the data, the model, the trainer and the agreement of a resumed checkpoint with the model are all
checked first, so a bad value or missing data leaves the folder as it was. Only the process of rank
0 writes files.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from bicorseg import typedconfig
from bicorseg.atomic import ensure_writable, remove_stale_temps, write_text_atomic
from bicorseg.checkpoint import atomic_torch_save, check_finite_weights, read_checkpoint
from bicorseg.defaults import LIGHTNING_PRECISIONS
from bicorseg.errors import CheckpointError, ConfigError
from bicorseg.models import BiCoRSeg
from bicorseg.spec import DatasetSpec
from bicorseg.training.budget import RunBudget
from bicorseg.training.config import TrainConfig, dataset_spec
from bicorseg.training.datamodule import SegmentationDataModule
from bicorseg.training.module import BiCoRSegModule
from bicorseg.training.progress import LogLines, TidyProgressBar, quiet_lightning

LAST_NAME = "last"
RUN_FILES = ("config.yaml", "checkpoints", "logs", "val_metrics.json")  # what a run folder holds
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO writing through :func:`~bicorseg.checkpoint.atomic_torch_save` (a
    temporary file beside the target, fsync, rename; Lightning's own writes the target in place) and
    reading with ``weights_only=True`` whatever its caller asks. A run's paths are local files."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path, map_location=map_location or "cpu")


class ResumableCSVLogger(CSVLogger):
    """A CSV logger that continues the ``metrics.csv`` of a resumed run (Lightning's deletes it),
    less the rows from ``resume_step`` on, which the resumed run logs again."""

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
        experiment = super().experiment
        if header:
            with open(path, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
            experiment.metrics_keys = header
        return experiment


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM ended the run; ``checkpoint`` holds its state (None: it had not started)."""

    def __init__(self, signum: int, checkpoint: Path | None, epoch: int, step: int) -> None:
        # ``epoch`` counts from 0 as Lightning does; the message counts from 1 as the progress lines do
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        name = signal.Signals(signum).name
        if checkpoint is None:
            message = f"interrupted by {name} before training started; no checkpoint was written"
        else:
            message = (
                f"interrupted by {name} at epoch {epoch + 1}, step {step}; saved {checkpoint} "
                "(continue with `resume`)"
            )
        super().__init__(message)

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + self.signum


class StopSignals:
    """SIGINT and SIGTERM while a run is set up end it at once; once it trains, they ask it to stop.

    While training, the first signal is only recorded (:attr:`requested`); :class:`LastState`
    saves the state at the next step boundary and ends the run. A second signal ends the process at
    once, without saving. Inside :meth:`held` (the run folder being laid out) a signal waits for the
    block's end. Handlers are installed only in the main thread. A process forked from the run (a
    DataLoader worker, which a terminal's Ctrl-C reaches too) ignores them: the run stops it.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.training = False
        self._holding = False
        self._previous: dict[int, Any] = {}
        self._owner = os.getpid()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:  # a forked DataLoader worker: only the run's process acts
            signal.signal(signum, signal.SIG_IGN)
            return
        if not (self.training or self._holding):
            raise TrainingInterrupted(signum, None, 0, 0)
        if self.requested is None:
            self.requested = signum
            return
        signal.signal(signum, signal.SIG_DFL)  # asked twice: stop now
        signal.raise_signal(signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A block that a signal does not cut in two; the run ends after it if one came."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self.requested is not None:
            raise TrainingInterrupted(self.requested, None, 0, 0)

    def install(self) -> None:
        """(Re)take SIGINT and SIGTERM (Lightning installs its own SIGTERM handler when fitting)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a background job): stays ignored
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """The handlers for a block; the previous ones are back after it."""
        self.install()
        try:
            yield self
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous = {}


class LastState(Checkpoint):
    """Writes ``last.ckpt`` where Lightning's ``ModelCheckpoint`` does not: on a stop request, and at the end.

    A stop request of :class:`StopSignals` is acted on after an optimizer step, agreed by all
    processes (every one takes part in ``trainer.save_checkpoint``; rank 0 writes); in the last batch
    of an epoch it waits for the epoch's end (after its validation); then the run ends with
    :class:`TrainingInterrupted`. Lightning's own handling cannot keep this: it ends a SIGINT with
    status 1 and no checkpoint, and acts on SIGTERM in the middle of gradient accumulation. At the
    end of training the finished state is saved (``ModelCheckpoint`` saves an epoch's end before the
    epoch is counted and its scheduler stepped). A :class:`Checkpoint`, so that Lightning runs it
    after the ``ModelCheckpoint`` callbacks.
    """

    def __init__(self, path: Path, signals: StopSignals):
        self.path, self.signals = Path(path), signals
        self._step_at_batch_start = 0

    def _save(self, trainer: L.Trainer) -> None:
        # a save, not a load: the full training state (optimizer, loops) that --resume needs; every
        # read of it goes through torch_files.read_torch_file, which unpickles with weights_only=True
        trainer.save_checkpoint(self.path, weights_only=False)

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        local = self.signals.requested is not None
        if not trainer.strategy.reduce_boolean_decision(local, all=False):
            return
        self._save(trainer)
        signum = self.signals.requested or signal.SIGTERM
        raise TrainingInterrupted(signum, self.path, trainer.current_epoch, trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.training = True
        self.signals.install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # accumulating gradients: not a step boundary
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop_if_requested(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_requested(trainer)


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


def _resume_state(path: str) -> dict[str, Any]:
    """The training checkpoint to resume from (memory-mapped), checked to hold a training state."""
    data = read_checkpoint(path, mmap=True)
    state, step = data.get("state_dict"), data.get("global_step")
    if not (isinstance(state, dict) and isinstance(step, int) and "optimizer_states" in data):
        raise CheckpointError(
            f"{path} is not a training checkpoint of bicorseg train (no optimizer state to resume from); "
            "to fine-tune from its weights, set model.pretrained instead"
        )
    check_finite_weights(data["state_dict"], path)
    return data


def _check_resumable(data: dict[str, Any], path: str, module: BiCoRSegModule) -> None:
    """Refuse a checkpoint whose weights do not fit the model of this config (another class count...)."""
    saved = {key: tuple(value.shape) for key, value in data["state_dict"].items()}
    wanted = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    if saved == wanted:
        return
    then = (data.get("bicorseg") or {}).get("model_config") or {}
    now = module.model.config.to_dict()
    keys = [k for k in now if k in then and then[k] != now[k]]
    if keys:
        difference = "; ".join(f"model.{k} is {then[k]!r} there, {now[k]!r} here" for k in keys[:3])
    else:
        key = next(k for k in sorted(saved.keys() | wanted.keys()) if saved.get(k) != wanted.get(k))
        difference = f"weight {key} is {saved.get(key, 'absent')} there, {wanted.get(key, 'absent')} here"
    raise CheckpointError(
        f"cannot resume from {path}: it was trained with another model ({difference}); "
        "resume with the run's own config, or start a new run"
    )


def build_trainer(
    config: TrainConfig,
    output: Path,
    callbacks: list[Callback],
    resume_step: int | None,
    signals: StopSignals,
) -> L.Trainer:
    """The Lightning Trainer of a run (loggers, checkpoints, strategy, precision)."""
    cfg = config.trainer
    has_validation = config.data.val_split is not None and cfg.limit_val_batches != 0
    checkpoint_dir = output / "checkpoints"
    named = {"dirpath": checkpoint_dir, "enable_version_counter": False}  # one file, replaced in place
    all_callbacks: list[Callback] = []
    if has_validation:
        all_callbacks.append(ModelCheckpoint(**named, filename="best", monitor=cfg.monitor, mode="max"))
    # last.ckpt without a monitor, per epoch and every n steps if asked (with save_last, Lightning
    # writes last.ckpt only in a step where it also saved another checkpoint)
    last = {**named, "filename": LAST_NAME}
    all_callbacks.append(ModelCheckpoint(**last, every_n_epochs=1, save_on_train_epoch_end=True))
    if cfg.checkpoint_every_n_steps:
        all_callbacks.append(ModelCheckpoint(**last, every_n_train_steps=cfg.checkpoint_every_n_steps))
    all_callbacks.append(LastState(checkpoint_dir / f"{LAST_NAME}.ckpt", signals))
    all_callbacks.append(RunBudget(config))  # the clock, max_minutes and the per-step learning rate
    # in a terminal a live bar (and the epoch lines); elsewhere plain lines every n steps and per epoch
    live = cfg.progress_bar and sys.stderr.isatty()
    if live:
        all_callbacks.append(TidyProgressBar())
    if cfg.log_lines:
        all_callbacks.append(LogLines(cfg.log_every_n_steps, steps=not live))
    all_callbacks.extend(callbacks)
    loggers: list[Any] = [
        # not Lightning's CSVLogger: it deletes the metrics.csv of a resumed run
        ResumableCSVLogger(save_dir=str(output), name="logs", version="csv", resume_step=resume_step)
    ]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(output), name="logs", version="tensorboard"))
    strategy: Any = cfg.strategy
    if cfg.strategy in ("ddp", "ddp_spawn"):
        strategy = DDPStrategy(
            start_method="spawn" if cfg.strategy == "ddp_spawn" else "popen",
            # without the auxiliary loss the static classifier gets no gradient
            find_unused_parameters=config.loss.aux_weight == 0,
        )
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
        precision=LIGHTNING_PRECISIONS[cfg.precision],
        deterministic=cfg.deterministic,
        log_every_n_steps=cfg.log_every_n_steps,
        check_val_every_n_epoch=cfg.check_val_every_n_epoch,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        logger=loggers,
        callbacks=all_callbacks,
        enable_progress_bar=live,
        enable_model_summary=False,  # LogLines states the model and its size in one line
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
    )


def _launched_as_rank_zero() -> bool:
    """Whether this process is global rank 0, before Lightning has set the ranks up.

    Launchers that set ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID`` (torchrun, Lightning's own DDP
    launcher, srun) are read by Lightning's ``rank_zero_only``; a node started by hand for
    Lightning's general-cluster recipe only has ``NODE_RANK``, and a node other than 0 must not
    touch the run folder (it may start after node 0 has written ``config.yaml``).
    """
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0").strip() in ("", "0")


def _start_run(output: Path, config: TrainConfig, replace: bool) -> None:
    """Lay out the run folder (rank 0): the old run's files go if ``replace``; then ``config.yaml``."""
    if replace:
        for name in RUN_FILES:
            old = output / name
            if old.is_dir():  # never a link: train refuses those
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output)
    remove_stale_temps(output / "checkpoints")  # left by a run killed while writing a checkpoint
    write_text_atomic(output / "config.yaml", typedconfig.to_yaml(config))


@quiet_lightning()  # Lightning's device lines and tips (its warnings still show)
def train(
    config: TrainConfig,
    output: str | Path,
    resume: str | None = None,
    spec: DatasetSpec | None = None,
    model: BiCoRSeg | None = None,
    callbacks: list[Callback] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or resume) a run described by ``config``, writing everything under ``output`` (see
    the module docstring). ``resume``: a checkpoint that fits the model of ``config``, or ``auto``;
    ``overwrite``: replace the run's files (:data:`RUN_FILES`) once the new run has started, leaving
    other files alone. SIGINT or SIGTERM saves ``last.ckpt`` and raises :class:`TrainingInterrupted`.
    """
    output = Path(output)
    is_writer = _launched_as_rank_zero()
    if resume is not None and overwrite:
        raise ConfigError("`resume` and `overwrite` exclude each other: continue the run or replace it")
    old_run: list[str] = []
    if is_writer:
        # a run never writes through a symbolic link
        links = [n for n in (*RUN_FILES, "logs/csv", "logs/tensorboard") if (output / n).is_symlink()]
        if links:
            raise ConfigError(
                f"{output / links[0]} is a symbolic link (to {os.path.realpath(output / links[0])}): a run "
                "writes only inside its own folder; remove the link or choose another folder",
                key="output",
            )
        old_run = [name for name in RUN_FILES if (output / name).exists()]
        if old_run and resume is None and not overwrite:
            raise ConfigError(
                f"{output} already holds a run ({', '.join(old_run)}): continue it with `resume`, "
                "replace it with `overwrite`, or choose another folder",
                key="output",
            )
        ensure_writable(output, folder=True)
    last = output / "checkpoints" / f"{LAST_NAME}.ckpt"
    ckpt_path = (str(last) if last.is_file() else None) if resume == "auto" else resume
    resumed = _resume_state(ckpt_path) if ckpt_path is not None else None
    signals = StopSignals()
    with signals.installed():
        spec = spec or dataset_spec(config.data, config.model.to_dict())
        if config.trainer.num_threads is not None:
            torch.set_num_threads(config.trainer.num_threads)
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        datamodule = SegmentationDataModule(config.data, spec, seed=config.trainer.seed)
        module = BiCoRSegModule(config, spec, model=model, output_dir=output)
        datamodule.setup("fit")  # unreadable or missing data fails here, before anything is written
        if resumed is not None:
            _check_resumable(resumed, str(ckpt_path), module)
        resume_step = resumed["global_step"] if resumed is not None else None
        trainer = build_trainer(config, output, callbacks or [], resume_step, signals)
        if is_writer:
            with signals.held():  # the old run is never left half-deleted
                _start_run(output, config, replace=overwrite and bool(old_run))
        with warnings.catch_warnings():
            # expected on CPU and with small datasets; they say nothing about this run being wrong
            for pattern in (
                r".*does not have many workers.*",
                r".*Experiment logs directory .* exists and is not empty.*",
                r".*Checkpoint directory .* exists and is not empty.*",
                r".*The number of training batches .* is smaller than the logging interval.*",
                r".*isinstance\(treespec, LeafSpec\).* is deprecated.*",  # inside Lightning, with recent torch
                # resuming inside an epoch: its data order restarts, as docs/guarantees.md says
                r".*resuming from a checkpoint that ended before the epoch ended.*",
                # data-parallel: the validation scores come from the matrix summed over the processes
                r".*It is recommended to use `self.log\('val/.*sync_dist=True\)`.*",
            ):
                warnings.filterwarnings("ignore", message=pattern)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if signals.requested is not None:  # the signal came in the last step: the run is complete and saved
        raise TrainingInterrupted(signals.requested, last, trainer.current_epoch, trainer.global_step)
    best = next(
        (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    return TrainResult(
        output=output,
        # named in the run folder as given, like last.ckpt (Lightning's path is absolute)
        best_checkpoint=last.with_name(Path(best.best_model_path).name)
        if best and best.best_model_path
        else None,
        last_checkpoint=last if last.is_file() else None,
        best_score=float(best.best_model_score) if best and best.best_model_score is not None else None,
        monitor=best.monitor if best else None,
        epoch=trainer.current_epoch,
        global_step=trainer.global_step,
        skipped_batches=module.skipped_batches,
    )
