"""Typed training configuration: dataclasses, a strict YAML loader, ``--key.sub value`` overrides.

A run is described by :class:`TrainConfig` with five sections: ``model`` (:class:`ModelConfig`),
``loss`` (:class:`LossConfig`), ``data``, ``optimizer`` and ``trainer``. Files are YAML with the
same nesting. Loading is strict: an unknown key, a value of the wrong type or an invalid value is
refused with a :class:`ConfigError` that names the key (``optimizer.lr: must be positive, got -1``),
before anything is built.

``model.num_classes``, ``model.in_channels`` and ``loss.ignore_index`` default to the dataset's
facts; when given, they must agree with them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from bicorseg.errors import BicorsegError, ConfigError
from bicorseg.losses import LossConfig
from bicorseg.models import ModelConfig
from bicorseg.spec import DatasetSpec
from bicorseg.training.lookahead import PHASES as LOOKAHEAD_PHASES
from bicorseg.yaml_files import read_yaml_mapping

DATASET_KINDS = ("vaihingen", "potsdam", "loveda", "folder", "synthetic")
PRECISIONS = ("32-true", "32", "bf16-mixed")
NAN_POLICIES = ("stop", "skip")
SCHEDULES = ("cosine", "constant")


@dataclass
class DataConfig:
    """Where the samples come from and how they are batched and augmented.

    Attributes:
        dataset: ``vaihingen``, ``potsdam``, ``loveda``, ``folder`` (see :mod:`bicorseg.data`) or
            ``synthetic`` (procedural samples for tests and smoke runs; needs no root).
        root: the prepared dataset folder (output of ``bicorseg prepare``) or the folder dataset.
        train_splits: splits concatenated for training (LoveDA's recipe: train and val).
        val_split: the split validated after every epoch; null for none.
        train_samples, val_samples: optional subsets of the splits, by sample name; an entry matches a
            sample whose name equals it or ends with ``/<entry>`` (``7`` matches ``Train/Rural/images_png/7``).
        crop_size: training crop (a multiple of 32).
        batch_size: per process; the global batch is ``batch_size * processes``.
        val_batch_size: per process, for validation.
        num_workers: data-loading worker processes.
        shuffle: shuffle the training samples each epoch.
        augment: options of the training augmentation (``bicorseg.data`` augmentation config);
            ``false`` disables augmentation and only crops.
        options: extra options for the dataset builder (e.g. band selection, folder layout).
        synthetic_size: image size and sample counts of the ``synthetic`` dataset.
    """

    dataset: str = "loveda"
    root: str | None = None
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str | None = "val"
    train_samples: list[str] | None = None
    val_samples: list[str] | None = None
    crop_size: int = 512
    batch_size: int = 8
    val_batch_size: int = 1
    num_workers: int = 2
    shuffle: bool = True
    augment: dict[str, Any] | bool = True
    options: dict[str, Any] = field(default_factory=dict)
    synthetic_size: list[int] = field(default_factory=lambda: [64, 16, 8])

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASET_KINDS)
        if self.dataset != "synthetic" and not self.root:
            _fail("data.root", f"is required for dataset {self.dataset!r}")
        if not self.train_splits:
            _fail("data.train_splits", "give at least one split")
        _positive("data.crop_size", self.crop_size)
        if self.crop_size % 32:
            _fail("data.crop_size", f"must be a multiple of 32, got {self.crop_size}")
        _positive("data.batch_size", self.batch_size)
        _positive("data.val_batch_size", self.val_batch_size)
        if self.num_workers < 0:
            _fail("data.num_workers", f"must not be negative, got {self.num_workers}")
        if len(self.synthetic_size) != 3 or min(self.synthetic_size) < 1:
            _fail("data.synthetic_size", "give [image size, training samples, validation samples]")
        for key in ("train_samples", "val_samples"):
            if getattr(self, key) is not None and not getattr(self, key):
                _fail(f"data.{key}", "give at least one sample name, or null for all")


@dataclass
class OptimizerConfig:
    """AdamW wrapped in Lookahead, with a per-epoch cosine schedule (the published settings)."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    lookahead: bool = True
    lookahead_k: int = 5
    lookahead_alpha: float = 0.5
    lookahead_phase: str = "textbook"  # "paper": the original code's schedule (syncs at steps 1, 6, 11, ...)
    schedule: str = "cosine"
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        if not self.lr > 0:
            _fail("optimizer.lr", f"must be positive, got {self.lr}")
        if self.weight_decay < 0:
            _fail("optimizer.weight_decay", f"must not be negative, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            _fail("optimizer.betas", f"give two values in [0, 1), got {self.betas}")
        _positive("optimizer.eps", self.eps)
        _positive("optimizer.lookahead_k", self.lookahead_k)
        if not 0.0 < self.lookahead_alpha <= 1.0:
            _fail("optimizer.lookahead_alpha", f"must be in (0, 1], got {self.lookahead_alpha}")
        _choice("optimizer.lookahead_phase", self.lookahead_phase, LOOKAHEAD_PHASES)
        _choice("optimizer.schedule", self.schedule, SCHEDULES)
        if not 0 <= self.min_lr <= self.lr:
            _fail("optimizer.min_lr", f"must be in [0, optimizer.lr], got {self.min_lr}")


@dataclass
class TrainerConfig:
    """The run: length, devices, precision, logging, checkpointing, and what to do with NaN losses.

    Attributes:
        max_epochs: epochs of the run (the cosine schedule spans them).
        max_steps: stop after this many optimizer steps (-1: no limit).
        limit_train_batches, limit_val_batches: batches per epoch (int) or fraction (float); null: all.
        accelerator: ``auto``, ``cpu``, ``gpu``...; devices: ``auto``, a count, or a list of ids.
        strategy: ``auto``, ``ddp`` (data parallel processes; gloo on CPU), ``ddp_spawn``...
        precision: ``32-true`` or ``bf16-mixed``.
        nan_policy: ``stop`` (raise naming the step) or ``skip`` (drop the batch) on a NaN or
            infinite loss or gradient.
        monitor: the validated metric that picks the best checkpoint (higher is better).
        checkpoint_every_n_steps: also write ``last.ckpt`` every n optimizer steps (null: per epoch).
        num_threads: torch CPU threads per process (null: torch's default). On a small or shared CPU,
            1 is often several times faster for small models than oversubscribed threads.
    """

    max_epochs: int = 45
    max_steps: int = -1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
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
    tensorboard: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _positive("trainer.max_epochs", self.max_epochs)
        if self.max_steps < -1 or self.max_steps == 0:
            _fail("trainer.max_steps", f"must be positive or -1, got {self.max_steps}")
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            if value is not None and (value <= 0 or (isinstance(value, float) and value > 1)):
                _fail(f"trainer.{key}", f"must be a positive count or a fraction in (0, 1], got {value}")
        _positive("trainer.num_nodes", self.num_nodes)
        _choice("trainer.precision", self.precision, PRECISIONS)
        _choice("trainer.nan_policy", self.nan_policy, NAN_POLICIES)
        _positive("trainer.log_every_n_steps", self.log_every_n_steps)
        _positive("trainer.check_val_every_n_epoch", self.check_val_every_n_epoch)
        _positive("trainer.accumulate_grad_batches", self.accumulate_grad_batches)
        if self.checkpoint_every_n_steps is not None:
            _positive("trainer.checkpoint_every_n_steps", self.checkpoint_every_n_steps)
        if self.gradient_clip_val is not None:
            _positive("trainer.gradient_clip_val", self.gradient_clip_val)
        if isinstance(self.devices, str) and self.devices != "auto" and not self.devices.isdigit():
            _fail("trainer.devices", f"give 'auto', a count or a list of device ids, got {self.devices!r}")
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        if isinstance(self.devices, int) and self.devices < 1:
            _fail("trainer.devices", f"give at least 1 device (or 'auto'), got {self.devices}")
        if isinstance(self.devices, list) and (
            not self.devices or min(self.devices) < 0 or len(set(self.devices)) != len(self.devices)
        ):
            _fail("trainer.devices", f"give a non-empty list of distinct device ids >= 0, got {self.devices}")
        if self.seed < 0:
            _fail("trainer.seed", f"must not be negative, got {self.seed}")
        if self.num_threads is not None:
            _positive("trainer.num_threads", self.num_threads)


@dataclass
class TrainConfig:
    """A whole training run (see module docstring)."""

    model: ModelConfig
    loss: LossConfig
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "loss": self.loss.to_dict(),
            "data": dataclasses.asdict(self.data),
            "optimizer": dataclasses.asdict(self.optimizer),
            "trainer": dataclasses.asdict(self.trainer),
        }

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """Block style for sections, flow style for short lists of numbers or names."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "trainer": TrainerConfig,
}
# Filled from the dataset's facts when absent.
DERIVED_KEYS = {("model", "num_classes"), ("model", "in_channels"), ("loss", "ignore_index")}


# --- helpers ------------------------------------------------------------------------------------------


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {message}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        _fail(key, f"must be positive, got {value}")


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(key, f"must be one of {', '.join(choices)}; got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp``; numbers written as strings are converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            _fail(key, "must not be null")
        errors = []
        # try the exact types first (an int stays an int in "int | float")
        for option in sorted((o for o in options if o is not type(None)), key=_union_rank(value)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:  # one type besides null: its own reason is the clearest
            raise errors[0]
        _fail(key, f"expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if value is None:
        _fail(key, f"must not be null (expected {_type_name(tp)})")
    if origin is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            _fail(key, f"expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        _fail(key, f"expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # YAML reads "5e-5" (no dot) as a string
            except ValueError:
                pass
        if number is None:
            _fail(key, f"expected a number, got {value!r}")
        if not math.isfinite(number):
            _fail(key, f"must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and key.split("[")[0].endswith("_samples"):
            return str(value)  # sample names such as LoveDA's 0..15
        _fail(key, f"expected a string, got {value!r}")
    return value


def _union_rank(value: Any) -> Any:
    def rank(option: Any) -> int:
        exact = {bool: bool, int: int, float: float, str: str}.get(option)
        if exact is not None and type(value) is exact:
            return 0
        if typing.get_origin(option) in (list, dict) and isinstance(value, list | dict | tuple):
            return 0
        return 1 if option is not str else 2  # strings last: "1e-4" should become a number

    return rank


def _section_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.init}


def _build_section(name: str, cls: type, data: dict[str, Any]) -> Any:
    known = _section_fields(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown key"
            + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; {name} takes {', '.join(known)}"
        )
    values = {key: _coerce(value, known[key], f"{name}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(f"{name}.") else f"{name}: {message}") from None
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"{name}: {error}") from None


# --- loading ------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a nested dict (``{}`` for an empty file)."""
    return read_yaml_mapping(path, "config file")


def parse_override_value(text: str) -> Any:
    """A command-line value read as YAML (``3``, ``1e-4``, ``null``, ``[0.02, 0.02]``, ``true``)."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``optimizer.lr``) in a nested config dict; the key must name a section field."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"{dotted}: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
        if not key:
            raise ConfigError(f"{dotted}: give a key inside the section, e.g. {section}.<key>")
        head, _, rest = key.partition(".")
        section_data = data.setdefault(section, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"{section}: must be a mapping")
        if rest:  # a key inside a mapping field, e.g. data.augment.mosaic_p
            inner = section_data.get(head)
            inner = dict(inner) if isinstance(inner, dict) else {}
            inner[rest] = value
            section_data[head] = inner
        else:
            section_data[head] = value
    return data


def build_config(data: dict[str, Any], spec: DatasetSpec | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a nested dict; ``spec`` supplies the derived keys."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; sections are {', '.join(SECTIONS)}")
    for section, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {value!r}")
    sections = {name: dict(data.get(name) or {}) for name in SECTIONS}
    data_cfg = _build_section("data", DataConfig, sections["data"])
    if spec is None:
        spec = dataset_spec(data_cfg, sections["model"])
    model_data, loss_data = sections["model"], sections["loss"]
    derived = {
        ("model", "num_classes"): (model_data, spec.num_classes, f"has {spec.num_classes} classes"),
        ("model", "in_channels"): (model_data, spec.num_bands, f"has {spec.num_bands} band(s)"),
        ("loss", "ignore_index"): (loss_data, spec.ignore_index, f"ignores label {spec.ignore_index}"),
    }
    for (section, key), (values, expected, fact) in derived.items():
        if values.get(key) is None:
            values[key] = expected
        elif values[key] != expected:
            raise ConfigError(
                f"{section}.{key}: is {values[key]!r} but dataset {spec.name!r} {fact}; "
                "leave it out to take the dataset's value"
            )
    return TrainConfig(
        model=_build_section("model", ModelConfig, model_data),
        loss=_build_section("loss", LossConfig, loss_data),
        data=data_cfg,
        optimizer=_build_section("optimizer", OptimizerConfig, sections["optimizer"]),
        trainer=_build_section("trainer", TrainerConfig, sections["trainer"]),
    )


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, spec: DatasetSpec | None = None
) -> TrainConfig:
    """Read a YAML config (optional), apply dotted overrides, validate, and fill derived keys."""
    data = read_yaml(path) if path is not None else {}
    if overrides:
        data = apply_overrides(data, overrides)
    return build_config(data, spec)


def dataset_spec(data_cfg: DataConfig, model_data: dict[str, Any] | None = None) -> DatasetSpec:
    """The facts of the configured dataset (the synthetic set takes its class count from the model)."""
    if data_cfg.dataset == "synthetic":
        from bicorseg.training.synthetic import synthetic_spec

        model_data = model_data or {}
        classes = model_data.get("num_classes") or 4
        bands = model_data.get("in_channels") or 3
        if not isinstance(classes, int) or classes < 2:
            _fail("model.num_classes", f"at least 2 classes are needed, got {classes!r}")
        if not isinstance(bands, int) or bands < 1:
            _fail("model.in_channels", f"must be at least 1, got {bands!r}")
        return synthetic_spec(classes, bands)
    try:
        from bicorseg.data import get_spec
    except ImportError as error:  # pragma: no cover - the data package is part of bicorseg
        raise ConfigError(f"data.dataset: the data package is unavailable ({error})") from None
    try:
        if data_cfg.dataset == "folder":
            return _folder_spec(data_cfg)
        return get_spec(data_cfg.dataset)
    except BicorsegError as error:
        raise ConfigError(f"data: {error}") from None


def _folder_spec(data_cfg: DataConfig) -> DatasetSpec:
    # a folder dataset's facts come from its class table (and its images, for the statistics)
    from bicorseg.data import build_dataset

    try:
        return build_dataset("folder", data_cfg.root, data_cfg.train_splits[0], **data_cfg.options).spec
    except TypeError as error:
        raise ConfigError(f"data.options: {error}") from None
