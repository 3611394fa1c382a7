"""``bicorseg train``: train or resume BiCoR-Seg from a YAML config with command-line overrides."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from bicorseg.errors import ConfigError


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of a shipped config (``loveda`` -> ``bicorseg/configs/loveda.yaml``).

    The shipped configs live inside the package (``configs/`` at the repository root links there).
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = Path(str(resources.files("bicorseg") / "configs" / f"{stem}.yaml"))
    if shipped.is_file():
        return shipped
    raise ConfigError(f"--config: no such file {name!r} (and no shipped config named {stem!r})")


def _override_fields() -> list[tuple[str, str, str]]:
    from bicorseg.training.config import DERIVED_KEYS, SECTIONS

    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            type_name = str(hints[f.name]).replace("typing.", "")
            note = " (default: the dataset's)" if (section, f.name) in DERIVED_KEYS else ""
            rows.append((section, f.name, f"{type_name}{note}"))
    return rows


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train BiCoR-Seg from a config (the published recipes ship as configs)",
        description=(
            "Train BiCoR-Seg from a YAML config. Any config key can be overridden on the command line "
            "(--optimizer.lr 5e-5, --trainer.devices 2, --model.topk_ratio 0.02); values are read as YAML. "
            "The run folder gets config.yaml (the resolved config), checkpoints/best.ckpt and last.ckpt "
            "(written at the end of every epoch), CSV and TensorBoard logs; a folder that holds a run is "
            "refused unless --resume or --overwrite is given. SIGINT (Ctrl-C) or SIGTERM saves last.ckpt "
            "and exits with status 130 or 143; a second signal stops at once. "
            "Shipped configs: vaihingen, potsdam, loveda, loveda-cpu, tiny-test."
        ),
    )
    parser.add_argument("--config", help="YAML config file, or the name of a shipped config")
    parser.add_argument("--output", help="run folder (checkpoints, logs, resolved config)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="resume from a checkpoint (weights, optimizer, scheduler, epoch, step); "
        "without a value: OUTPUT/checkpoints/last.ckpt if it exists",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in OUTPUT: its config.yaml, checkpoints/, logs/ and val_metrics.json are "
        "deleted once the new run has started (config, data, model built); other files are kept",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, including keys inside mappings (data.augment.mosaic_p=0)",
    )
    group = parser.add_argument_group("config overrides (one per key; see the config files)")
    for section, name, type_name in _override_fields():
        group.add_argument(
            f"--{section}.{name}",
            dest=f"override__{section}.{name}",
            metavar="VALUE",
            default=argparse.SUPPRESS,
            help=type_name,
        )
    parser.set_defaults(func=run)


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from bicorseg.training.config import parse_override_value

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_override_value(value)
    for key, value in vars(args).items():
        if key.startswith("override__"):
            overrides[key.removeprefix("override__")] = parse_override_value(value)
    return overrides


def run(args: argparse.Namespace) -> int:
    from bicorseg.training.config import load_config

    path = resolve_config_path(args.config) if args.config else None
    config = load_config(path, collect_overrides(args))
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if not args.output:
        raise ConfigError("--output: give the run folder")
    from lightning.pytorch.utilities import rank_zero_only

    from bicorseg.training.run import TrainingInterrupted, train

    if args.resume == "auto" and rank_zero_only.rank == 0:
        last = Path(args.output) / "checkpoints" / "last.ckpt"
        print(f"resuming from {last}" if last.is_file() else f"no {last} yet: starting a new run")
    try:
        result = train(config, args.output, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if rank_zero_only.rank == 0:
            print(f"bicorseg train: {stop}", file=sys.stderr)
        return stop.exit_status
    if rank_zero_only.rank == 0:
        print(f"trained to epoch {result.epoch}, step {result.global_step}; run folder {result.output}")
        if result.best_checkpoint is not None:
            print(f"  best checkpoint: {result.best_checkpoint} ({result.monitor} = {result.best_score:.4f})")
        if result.last_checkpoint is not None:
            print(f"  last checkpoint: {result.last_checkpoint} (resume with --resume)")
        if result.skipped_batches:
            print(f"  skipped {result.skipped_batches} batch(es) with a non-finite loss or gradient")
        print(f"  logs: {result.output / 'logs'} (CSV and TensorBoard)")
    return 0
