"""Typed training configuration: the sections of a run as dataclasses, read from YAML with dotted overrides.

A run is described by :class:`TrainConfig` with five sections: ``model`` (:class:`ModelConfig`),
``loss`` (:class:`LossConfig`), ``data``, ``optimizer`` and ``trainer``. Files are YAML with the
same nesting; ``section.key`` overrides set single keys (``optimizer.lr``, and keys of the sections
inside sections such as ``data.augment.mosaic_p``). Loading is strict (:mod:`bicorseg.typedconfig`):
every fault is one :class:`ConfigError` naming the key (``optimizer.lr: must be positive, got -1``),
before anything is built. No torch is imported here.

``model.num_classes``, ``model.in_channels`` and ``loss.ignore_index`` default to the dataset's
facts; when given, they must agree with them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bicorseg import typedconfig
from bicorseg.data_options import ONLY_CROP, AugmentOptions, FolderOptions
from bicorseg.defaults import LIGHTNING_PRECISIONS, STRIDE, TRAIN_PRECISIONS
from bicorseg.errors import ConfigError
from bicorseg.losses.config import LossConfig
from bicorseg.models.config import ModelConfig
from bicorseg.spec import DATASET_KINDS, DatasetSpec
from bicorseg.text_files import read_yaml_mapping
from bicorseg.typedconfig import check_choice

if TYPE_CHECKING:  # a geo split opens rasters: imported where one is made
    from bicorseg.data.geo import GeoSplit

NAN_POLICIES = ("stop", "skip")
SCHEDULES = ("cosine", "constant")
LOOKAHEAD_PHASES = ("textbook", "paper")  # see bicorseg.training.lookahead
# the trainer keys that must be positive where given
POSITIVE_TRAINER_KEYS = (
    "max_epochs max_minutes num_nodes log_every_n_steps check_val_every_n_epoch accumulate_grad_batches "
    "checkpoint_every_n_steps gradient_clip_val num_threads"
).split()
# the keys of the data section that only geo datasets take
GEO_KEYS = (
    "images stac_bands labels label_field labels_where priority_field labelled_area background classes "
    "val_area val_block val_buffer chips_per_epoch strict"
).split()


@dataclass
class DataConfig:
    """Where the samples come from and how they are batched and augmented.

    Attributes:
        dataset: ``vaihingen``, ``potsdam``, ``loveda`` (a folder written by ``bicorseg prepare``),
            ``folder`` (your own images and masks), ``geo`` (georeferenced rasters with label polygons
            or a label raster; chips are cut on the fly) or ``synthetic`` (procedural samples for
            tests; needs no root).
        root: the prepared dataset folder, or the folder of a folder dataset (its ``images/`` and
            ``masks/`` folders may lie at any depth).
        class_table: folder and geo datasets: the YAML class table (a file, the name of a shipped
            table such as ``dubai``, or the table itself as a mapping): decodes a folder dataset's
            masks; names the classes of geo labels, the codes that mean them (``value``) and their colours.
        train_splits: splits joined for training (a folder dataset's ``all`` is its whole root).
        val_split: the split validated after every epoch; null for none. When it is also a training
            split, ``val_fraction`` or ``val_samples`` say which of its samples are held out. Geo
            datasets: ``val`` (the validation blocks or ``val_area``) or null.
        val_fraction: share of the validation split's samples held out for validation (drawn with
            ``val_seed``) and left out of training; for a validation split that is also a training split.
            Geo datasets: the share of the labelled pixels the validation blocks hold (default 0.2).
        val_seed: seed of the ``val_fraction`` draw (independent of the training seed, so that runs
            with different seeds validate on the same samples, or blocks).
        train_samples: only these training samples, by name; an entry matches a sample whose name
            equals it, ends with ``/<entry>`` (``7`` matches ``Train/Rural/images_png/7``) or lies in a
            folder of that name (``Tile 8``); null for all (less the held-out ones).
        val_samples: validate on these samples of the validation split, matched as ``train_samples``;
            they are left out of training.
        crop_size: training crop (a multiple of 32); geo datasets: also the validation windows.
        batch_size: training samples per process and step; the global batch is ``batch_size * processes``.
        val_batch_size: validation samples per process and step.
        num_workers: data-loading worker processes.
        cache_mb: datasets of samples: keep up to this many MiB of decoded training images and
            masks in memory, in each loading process, so that a small dataset is decoded once
            instead of every epoch (0: none). A 1024 x 1024 RGB image and its mask take 4 MiB.
        shuffle: shuffle the training samples each epoch.
        augment: the training augmentation (rescale, crop, rot90/flips, mosaic): its keys, true for
            the published defaults or false to only crop.
        options: folder datasets: where the images and masks are.
        synthetic_size: image size, training and validation sample counts of the ``synthetic`` dataset.
        images: geo datasets: the rasters, a list of files, folders (their .tif, .tiff, .vrt, .jp2
            and .img files), glob patterns (``tiles/**/*.tif``), URLs or STAC items (``.json``, read
            as ``stac_bands`` says); any band count, 8 or 16 bit or floating point; all with the same
            bands.
        stac_bands: geo datasets: the bands read from the STAC items among ``images`` (their
            ``eo:bands`` common names or asset keys, in order: ``[red, green, blue, nir]``); they name
            the checkpoint's bands, so ``predict --stac-item`` picks the same assets.
        labels: geo datasets: the labels, a vector layer in any format GDAL reads (GeoPackage,
            Shapefile, GeoJSON, FlatGeobuf...; ``PATH`` or ``PATH|layername=NAME``, as QGIS writes a
            layer of a GeoPackage) in any CRS, or a raster of class codes on any grid.
        label_field: geo datasets: the attribute of the polygons holding their class name or code.
        labels_where: geo datasets: an attribute filter of the polygons, an OGR SQL WHERE clause
            (``"checked = 1"``); null for all.
        priority_field: geo datasets: a numeric attribute of the polygons; where polygons of
            different classes overlap, the higher value wins. At equal priority (or without this
            field) the smaller polygon wins.
        labelled_area: geo datasets: a layer of the areas labelled completely: inside, pixels no
            polygon covers are the ``background`` class; outside, they are neither trained nor scored.
            Null: only pixels under a polygon are labelled.
        background: geo datasets: the class of the pixels of ``labelled_area`` that no polygon covers.
        classes: geo datasets: the class names in index order (a code means the class it names, or
            the class table's ``value``); null: the labels' distinct codes, sorted (``background``
            first with a labelled area), filled in when the run starts so that its config.yaml and
            its checkpoints record them.
        val_area: geo datasets: a layer of the validation area; null: blocks (``val_block``,
            ``val_fraction``, ``val_seed``).
        val_block: geo datasets: the side of the validation blocks, in pixels of the first raster
            (a multiple of 64).
        val_buffer: geo datasets: pixels around the validation area that no training chip reaches
            (neighbouring pixels are alike: a buffer makes the validation more honest).
        chips_per_epoch: geo datasets: training chips drawn per epoch (shared among the processes).
        strict: geo datasets: refuse invalid polygons instead of repairing them with make_valid.
    """

    dataset: str = "loveda"
    root: str | None = None
    class_table: str | dict[str, Any] | None = None
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str | None = "val"
    val_fraction: float | None = None
    val_seed: int = 0
    train_samples: list[str] | None = None
    val_samples: list[str] | None = None
    crop_size: int = 512
    batch_size: int = 8
    val_batch_size: int = 1
    num_workers: int = 2
    cache_mb: int = 0
    shuffle: bool = True
    augment: AugmentOptions | bool = field(default_factory=AugmentOptions)
    options: FolderOptions = field(default_factory=FolderOptions)
    synthetic_size: list[int] = field(default_factory=lambda: [64, 16, 8])
    images: list[str] | str | None = None
    stac_bands: list[str] | None = None
    labels: str | None = None
    label_field: str | None = None
    labels_where: str | None = None
    priority_field: str | None = None
    labelled_area: str | None = None
    background: str = "background"
    classes: list[str] | None = None
    val_area: str | None = None
    val_block: int = 1024
    val_buffer: int = 0
    chips_per_epoch: int = 1000
    strict: bool = False

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, DATASET_KINDS)
        if isinstance(self.augment, bool):  # the config.yaml of the run states every option
            self.augment = AugmentOptions() if self.augment else ONLY_CROP
        if self.dataset != "folder" and self.options != FolderOptions():
            _fail("data.options", f"is for folder datasets, not {self.dataset!r}")
        smallest = 64 if self.dataset == "geo" else STRIDE  # geo: a validation window of several cells
        if self.crop_size < smallest or self.crop_size % STRIDE:
            _fail(
                "data.crop_size", f"must be a multiple of {STRIDE}, at least {smallest}; got {self.crop_size}"
            )
        _positive("data.batch_size", self.batch_size)
        _positive("data.val_batch_size", self.val_batch_size)
        _not_negative("data.num_workers", self.num_workers)
        _not_negative("data.cache_mb", self.cache_mb)
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            _fail("data.val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        if self.dataset == "geo":
            self._check_geo()
        else:
            self._check_samples()

    def _check_samples(self) -> None:
        for item in dataclasses.fields(self):
            if item.name in GEO_KEYS and getattr(self, item.name) != item.default:
                _fail(f"data.{item.name}", f"is for geo datasets (data.dataset: geo), not {self.dataset!r}")
        if self.dataset != "synthetic" and not self.root:
            what = "the folder of images and masks" if self.dataset == "folder" else "the prepared folder"
            _fail("data.root", f"is required for dataset {self.dataset!r} ({what})")
        if self.class_table is not None and self.dataset != "folder":
            _fail("data.class_table", f"is for folder datasets; dataset {self.dataset!r} has its own classes")
        if not self.train_splits:
            _fail("data.train_splits", "give at least one split")
        if len(self.synthetic_size) != 3 or min(self.synthetic_size) < 1:
            _fail("data.synthetic_size", "give [image size, training samples, validation samples]")
        for key in ("train_samples", "val_samples"):
            if getattr(self, key) == []:
                _fail(f"data.{key}", "give at least one sample name, or null for all")
        if self.val_fraction is not None and self.val_samples is not None:
            _fail("data.val_fraction", "give data.val_fraction or data.val_samples, not both")
        if self.val_fraction is not None and not self.holds_out:
            held = f"the validation split {self.val_split!r} is not one of data.train_splits"
            _fail("data.val_fraction", f"holds out part of a training split, but {held}")
        if (
            self.holds_out
            and self.dataset != "synthetic"
            and self.val_fraction is None
            and not self.val_samples
        ):
            _fail(
                "data.val_split",
                f"{self.val_split!r} is also a training split, so validation would score training "
                "images: hold out a share with data.val_fraction or list data.val_samples",
            )

    def _check_geo(self) -> None:
        if isinstance(self.images, str):
            self.images = [self.images]
        if not self.images:
            _fail("data.images", "give the rasters of the geo dataset (files, folders, patterns or URLs)")
        if not self.labels:
            _fail("data.labels", "give the label layer (polygons) or the label raster of the geo dataset")
        if self.root is not None:
            _fail("data.root", "is not used by geo datasets: give data.images and data.labels")
        if self.class_table is not None and self.classes is not None:
            _fail("data.classes", "give data.classes or data.class_table, not both")
        if self.val_split not in (None, "val"):
            _fail(
                "data.val_split",
                f"geo datasets validate on 'val' (blocks or data.val_area), not {self.val_split!r}",
            )
        if self.val_area is not None and self.val_fraction is not None:
            _fail(
                "data.val_fraction", "chooses validation blocks; with data.val_area give no data.val_fraction"
            )
        for key in ("train_samples", "val_samples", "cache_mb"):
            if getattr(self, key):
                _fail(f"data.{key}", "is for datasets of samples; geo datasets read chips from their rasters")
        if self.val_block < 64 or self.val_block % 64:
            _fail("data.val_block", f"must be a multiple of 64 pixels, got {self.val_block}")
        _not_negative("data.val_buffer", self.val_buffer)
        _positive("data.chips_per_epoch", self.chips_per_epoch)
        if self.classes is not None and len(self.classes) < 2:
            _fail("data.classes", "give at least two class names, or null to take the labels' codes")

    def geo_options(self) -> dict[str, Any]:
        """The parameters of :class:`bicorseg.data.geo.GeoSource` of a geo dataset."""
        return {
            "images": list(self.images or []),
            "labels": self.labels,
            "label_field": self.label_field,
            "where": self.labels_where,
            "priority_field": self.priority_field,
            "labelled_area": self.labelled_area,
            "background": self.background,
            "classes": self.classes,
            "class_table": resolve_class_table(self.class_table) if self.class_table is not None else None,
            "strict": self.strict,
            "stac_bands": self.stac_bands,
        }

    def geo_split(self, spec: DatasetSpec, window: int) -> GeoSplit:
        """The :class:`bicorseg.data.geo.GeoSplit` of a geo dataset (training windows of ``window``
        pixels, validation windows of ``crop_size``); its ``source`` is closed by the caller."""
        from bicorseg.data.geo import GeoSource, GeoSplit

        source = GeoSource(**self.geo_options(), spec=spec)
        try:
            return GeoSplit(
                source, window, self.crop_size, validate=self.val_split is not None, val_area=self.val_area,
                val_block=self.val_block, val_fraction=0.2 if self.val_fraction is None else self.val_fraction,
                val_seed=self.val_seed, val_buffer=self.val_buffer, strict=self.strict,
            )  # fmt: skip
        except BaseException:
            source.close()
            raise

    @property
    def holds_out(self) -> bool:
        """Validation takes samples out of a training split (``val_fraction`` or ``val_samples``)."""
        return self.val_split is not None and self.val_split in self.train_splits

    def dataset_options(self) -> dict[str, Any]:
        """The options of the dataset builder: ``options`` plus the resolved ``class_table``."""
        options: dict[str, Any] = dataclasses.asdict(self.options) if self.dataset == "folder" else {}
        if self.class_table is not None:
            options["class_table"] = resolve_class_table(self.class_table)
        return options


@dataclass
class OptimizerConfig:
    """AdamW wrapped in Lookahead, with a per-epoch cosine schedule (the published settings).

    Attributes:
        lr: learning rate (the peak of the cosine schedule).
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's two moment decay rates, each in [0, 1).
        eps: AdamW's denominator constant.
        lookahead: wrap AdamW in Lookahead.
        lookahead_k: Lookahead's synchronisation period (fast steps between syncs).
        lookahead_alpha: how far the slow weights move towards the fast ones at a sync, in (0, 1].
        lookahead_phase: ``textbook`` (syncs at steps k, 2k, ...) or ``paper`` (the original code's
            schedule: syncs at steps 1, k + 1, 2k + 1, ...).
        schedule: ``cosine`` (annealed to ``min_lr`` over the run) or ``constant``. The cosine is
            laid per epoch over ``trainer.max_epochs`` (the published form) when the epochs alone
            bound the run; with ``trainer.max_steps``, ``trainer.max_minutes`` or a warm-up it is
            laid per step over the run's progress, the larger of the share of the steps done and
            the share of the time used, so it reaches ``min_lr`` whichever limit ends the run.
        min_lr: the learning rate at the end of the cosine schedule.
        warmup_steps: optimizer steps of a linear warm-up from ``lr / warmup_steps`` to ``lr`` (0: none).
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    lookahead: bool = True
    lookahead_k: int = 5
    lookahead_alpha: float = 0.5
    lookahead_phase: str = "textbook"
    schedule: str = "cosine"
    min_lr: float = 1e-6
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _positive("optimizer.lr", self.lr)
        _not_negative("optimizer.weight_decay", self.weight_decay)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            _fail("optimizer.betas", f"give two values in [0, 1), got {self.betas}")
        _positive("optimizer.eps", self.eps)
        _positive("optimizer.lookahead_k", self.lookahead_k)
        if not 0.0 < self.lookahead_alpha <= 1.0:
            _fail("optimizer.lookahead_alpha", f"must be in (0, 1], got {self.lookahead_alpha}")
        check_choice("optimizer.lookahead_phase", self.lookahead_phase, LOOKAHEAD_PHASES)
        check_choice("optimizer.schedule", self.schedule, SCHEDULES)
        if not 0 <= self.min_lr <= self.lr:
            _fail("optimizer.min_lr", f"must be in [0, optimizer.lr], got {self.min_lr}")
        _not_negative("optimizer.warmup_steps", self.warmup_steps)


@dataclass
class TrainerConfig:
    """The run: length, devices, precision, logging, checkpointing, and what to do with NaN losses.

    Attributes:
        max_epochs: epochs of the run (the cosine schedule spans them).
        max_steps: stop after this many optimizer steps (-1: no limit).
        max_minutes: stop when training (validation included) has run this long, wall-clock, and
            lay the learning-rate schedule over that time (null: no limit); the run then ends with
            one more validation. Whichever of ``max_epochs``, ``max_steps`` and ``max_minutes`` is
            reached first ends the run, and the schedule reaches its floor there.
        limit_train_batches: training batches per epoch, a count (int) or a fraction (float); null: all.
        limit_val_batches: validation batches per validation, a count or a fraction; null: all.
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: ``auto``, a device count, or a list of device ids.
        num_nodes: machines of a multi-node run.
        strategy: ``auto``, ``ddp`` (data parallel processes; gloo on CPU), ``ddp_spawn``, ...
        precision: ``fp32``, ``bf16`` or ``fp16`` (mixed precision: float32 weights, the
            forward and backward in bf16/fp16), the words of inference's precision.
        seed: seed of the weights, the data order and the augmentation.
        deterministic: ask torch for deterministic algorithms (slower on GPUs).
        log_every_n_steps: log the loss terms, and write a progress line, every n optimizer steps.
        check_val_every_n_epoch: validate every n epochs.
        checkpoint_every_n_steps: also write ``last.ckpt`` every n optimizer steps (null: per epoch).
        monitor: the validated metric that picks ``best.ckpt`` (higher is better): ``val/miou``,
            ``val/mean_f1``, ``val/oa``.
        nan_policy: on a NaN or infinite loss or gradient, ``stop`` (an error naming the step) or
            ``skip`` (drop the batch).
        gradient_clip_val: clip the gradient norm to this value (null: no clipping).
        accumulate_grad_batches: batches whose gradients are summed per optimizer step.
        progress_bar: a live progress display when stderr is a terminal (elsewhere, and when false,
            plain progress lines).
        log_lines: write the plain progress lines on stderr: the start, every ``log_every_n_steps``
            steps, each epoch, each validation with its per-class table.
        tensorboard: also write TensorBoard logs (CSV logs are always written).
        num_threads: torch CPU threads per process (null: torch's default). On a small or shared CPU,
            1 is often several times faster for small models than oversubscribed threads.
    """

    max_epochs: int = 45
    max_steps: int = -1
    max_minutes: float | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "fp32"
    seed: int = 42
    deterministic: bool = False
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    checkpoint_every_n_steps: int | None = None
    monitor: str = "val/miou"
    nan_policy: str = "stop"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    progress_bar: bool = True
    log_lines: bool = True
    tensorboard: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.max_steps < -1 or self.max_steps == 0:
            _fail("trainer.max_steps", f"must be positive or -1, got {self.max_steps}")
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            if value is not None and (value <= 0 or (isinstance(value, float) and value > 1)):
                _fail(f"trainer.{key}", f"must be a positive count or a fraction in (0, 1], got {value}")
        lightning_word = {name: word for word, name in LIGHTNING_PRECISIONS.items()}.get(str(self.precision))
        if lightning_word is not None:  # Lightning's name for one of ours
            _fail(
                "trainer.precision", f"write {lightning_word!r}, not {self.precision!r} (fp32, bf16 or fp16)"
            )
        check_choice("trainer.precision", self.precision, TRAIN_PRECISIONS)
        check_choice("trainer.nan_policy", self.nan_policy, NAN_POLICIES)
        for key in POSITIVE_TRAINER_KEYS:
            if getattr(self, key) is not None:
                _positive(f"trainer.{key}", getattr(self, key))
        _not_negative("trainer.seed", self.seed)
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        devices = self.devices
        if isinstance(devices, str) and devices != "auto":
            _fail("trainer.devices", f"give 'auto', a count or a list of device ids, got {devices!r}")
        if isinstance(devices, int) and devices < 1:
            _fail("trainer.devices", f"give at least 1 device (or 'auto'), got {devices}")
        if isinstance(devices, list) and (
            not devices or min(devices) < 0 or len(set(devices)) < len(devices)
        ):
            _fail("trainer.devices", f"give a non-empty list of distinct device ids >= 0, got {devices}")


@dataclass
class TrainConfig:
    """A whole training run (see module docstring)."""

    model: ModelConfig
    loss: LossConfig
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        multiple = self.model.stride
        if self.data.crop_size % multiple:
            _fail(
                "data.crop_size",
                f"must be a multiple of {multiple} with model.downsample "
                f"{self.model.downsample}; got {self.data.crop_size}",
            )

    def to_dict(self) -> dict[str, Any]:
        return {name: typedconfig.to_plain(getattr(self, name)) for name in SECTIONS}

    @property
    def schedule_per_step(self) -> bool:
        """Whether the learning rate is set every step (see :class:`OptimizerConfig`'s ``schedule``)."""
        trainer = self.trainer
        bounded = trainer.max_steps > 0 or trainer.max_minutes is not None
        return self.optimizer.warmup_steps > 0 or (self.optimizer.schedule == "cosine" and bounded)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "trainer": TrainerConfig,
}
# Filled from the dataset's facts when absent: each key's value and the fact it states.
DERIVED_KEYS: dict[tuple[str, str], Callable[[DatasetSpec], tuple[Any, str]]] = {
    ("model", "num_classes"): lambda spec: (spec.num_classes, f"has {spec.num_classes} classes"),
    ("model", "in_channels"): lambda spec: (spec.num_bands, f"has {spec.num_bands} band(s)"),
    ("loss", "ignore_index"): lambda spec: (spec.ignore_index, f"ignores label {spec.ignore_index}"),
}


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(message, key=key)


def _positive(key: str, value: float) -> None:
    if not value > 0:
        _fail(key, f"must be positive, got {value}")


def _not_negative(key: str, value: float) -> None:
    if value < 0:
        _fail(key, f"must not be negative, got {value}")


# --- shipped files ------------------------------------------------------------------------------------


def shipped(kind: str, name: str) -> Path:
    """A file shipped inside the package: ``shipped("configs", "loveda")``, ``shipped("classes", "dubai")``."""
    folder = resources.files("bicorseg") / "configs"
    if kind == "classes":
        folder = folder / "classes"
    return Path(str(folder / f"{name}.yaml"))


def shipped_names(kind: str) -> list[str]:
    """The names of the shipped configs (``kind="configs"``) or class tables (``"classes"``)."""
    return sorted(p.stem for p in shipped(kind, "x").parent.glob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``loveda`` -> ``bicorseg/configs/loveda.yaml``).

    The shipped configs live inside the package (``configs/`` at the repository root links there).
    """
    return _file_or_shipped("configs", name, "config")


def resolve_class_table(value: str | dict[str, Any]) -> str | dict[str, Any]:
    """A class table file, the name of a shipped one (``dubai``), or a table given as a mapping."""
    return value if isinstance(value, dict) else str(_file_or_shipped("classes", value, "data.class_table"))


def _file_or_shipped(kind: str, name: str | Path, key: str) -> Path:
    path = Path(name).expanduser()
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.is_file() or shipped(kind, stem).is_file():
        return path if path.is_file() else shipped(kind, stem)
    names = shipped_names(kind)
    guess = typedconfig.nearest(stem, names)
    hint = f"did you mean {guess!r}? " if guess else ""
    what = "config" if kind == "configs" else "class table"
    raise ConfigError(
        f"no such file {str(name)!r} and no shipped {what} named {stem!r} ({hint}shipped: {', '.join(names)})",
        key=key,
    )


# --- loading ------------------------------------------------------------------------------------------


def build_config(data: dict[str, Any], spec: DatasetSpec | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested dict; ``spec`` supplies the derived keys."""
    typedconfig.check_keys(TrainConfig, data)  # every key, before any data is read
    sections = {name: dict(data.get(name) or {}) for name in SECTIONS}
    # the sections that need no dataset first: their errors come before any data is read
    optimizer = typedconfig.build(OptimizerConfig, sections["optimizer"], "optimizer")
    trainer = typedconfig.build(TrainerConfig, sections["trainer"], "trainer")
    data_cfg = typedconfig.build(DataConfig, sections["data"], "data")
    if spec is None:
        spec = dataset_spec(data_cfg, sections["model"])
    if data_cfg.dataset == "geo" and data_cfg.classes is None and data_cfg.class_table is None:
        data_cfg.classes = list(spec.class_names)  # the run's config.yaml records the classes it found
    for (section, key), derive in DERIVED_KEYS.items():
        values, (expected, fact) = sections[section], derive(spec)
        if values.get(key) is None:
            values[key] = expected
        elif values[key] != expected:
            raise ConfigError(
                f"is {values[key]!r} but dataset {spec.name!r} {fact}; leave it out to take the dataset's value",
                key=f"{section}.{key}",
            )
    return TrainConfig(
        model=typedconfig.build(ModelConfig, sections["model"], "model"),
        loss=typedconfig.build(LossConfig, sections["loss"], "loss"),
        data=data_cfg,
        optimizer=optimizer,
        trainer=trainer,
    )


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, spec: DatasetSpec | None = None
) -> TrainConfig:
    """Read a YAML config (optional), apply dotted overrides, validate, and fill derived keys."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    for dotted, value in (overrides or {}).items():  # optimizer.lr, data.augment.mosaic_p
        data = typedconfig.set_dotted(data, dotted, value)
    return build_config(data, spec)


def dataset_spec(data_cfg: DataConfig, model_data: dict[str, Any] | None = None) -> DatasetSpec:
    """The facts of the configured dataset (the synthetic set takes its classes and bands from the
    model section, 4 and 3 unless given)."""
    if data_cfg.dataset == "synthetic":
        from bicorseg.data.synthetic import synthetic_spec

        given = {key: value for key, value in (model_data or {}).items() if value is not None}
        model = typedconfig.build(ModelConfig, {"num_classes": 4, **given}, "model")
        return synthetic_spec(model.num_classes, model.in_channels)
    from bicorseg.data import build_dataset, get_spec

    try:
        if data_cfg.dataset == "folder":  # from its class table (and its images, for the statistics)
            options = data_cfg.dataset_options()
            return build_dataset("folder", data_cfg.root, data_cfg.train_splits[0], **options).spec
        if data_cfg.dataset == "geo":
            from bicorseg.data.geo import GeoSource

            return GeoSource(**data_cfg.geo_options(), index=False).spec
        return get_spec(data_cfg.dataset)
    except ConfigError as error:  # an input fault (a missing folder, a bad image) names its file itself
        if error.key is not None:
            raise
        raise ConfigError(error.detail, key="data") from None
