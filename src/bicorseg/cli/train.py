"""``bicorseg train``: train or resume BiCoR-Seg from a YAML config with command-line overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bicorseg.cli.common import add_shared_options
from bicorseg.errors import ConfigError

USAGE = (
    "bicorseg train --config NAME|FILE --output DIR [--SECTION.KEY VALUE ...] [--set KEY=VALUE ...]\n"
    "                      [--resume [CKPT]] [--print-config]"
)


def add_config_options(parser: argparse.ArgumentParser, sections: dict[str, type]) -> None:
    """A ``--section.key`` option for every key of each config section (``train``, ``chips``), with
    its meaning, type and default from the dataclass."""
    import typing

    from bicorseg import typedconfig
    from bicorseg.training.config import DERIVED_KEYS

    for section, cls in sections.items():
        group = parser.add_argument_group(
            f"{section}: {(cls.__doc__ or section).splitlines()[0].rstrip('.')}"
        )
        for info in typedconfig.fields_of(cls, section):
            if tuple(info.key.split(".")) in DERIVED_KEYS:
                default = "the dataset's"
            elif typedconfig.section_of(info.type) is not None:
                default = f"the --{info.key}.* keys"
            else:
                default = (
                    "required"
                    if info.required
                    else typedconfig.to_yaml(info.default).strip().removesuffix("...").strip()
                )
            kind = typedconfig.type_name(info.type)
            repeated = {str, list[str]} <= set(typing.get_args(info.type))  # data.images: one or several
            group.add_argument(
                f"--{info.key}",
                dest=f"override__{info.key}",
                metavar={"int": "INT", "float": "FLOAT", "str": "TEXT", "bool": "BOOL"}.get(kind, "VALUE"),
                default=argparse.SUPPRESS,
                action="append" if repeated else "store",
                help=f"{info.doc} [{kind}; default: {default}]".replace("%", "%%")
                + (" (may be given several times)" if repeated else ""),
            )


def register(subparsers: argparse._SubParsersAction) -> None:
    from bicorseg.training.config import SECTIONS, shipped_names

    parser = subparsers.add_parser(
        "train",
        usage=USAGE,
        help="train BiCoR-Seg from a config (the published recipes ship as configs)",
        description=(
            "Train BiCoR-Seg from a YAML config. Any config key can be set on the command line "
            "(--optimizer.lr 5e-5, --trainer.devices 2, --data.augment.mosaic_p 0); values are read as "
            "YAML. The defaults below are the built-in ones: a --config file sets its own, and "
            "--print-config shows the result. The run folder gets config.yaml (the resolved config), "
            "checkpoints/best.ckpt and last.ckpt (written at the end of every epoch), CSV and TensorBoard "
            "logs; a folder that holds a run is refused unless --resume or --overwrite is given. SIGINT "
            "(Ctrl-C) or SIGTERM saves last.ckpt and exits with status 130 or 143; a second signal stops "
            f"at once. Shipped configs: {', '.join(shipped_names('configs'))}."
        ),
    )
    parser.add_argument(
        "--config", metavar="NAME|FILE", help="YAML config file, or the name of a shipped config"
    )
    parser.add_argument("--output", metavar="DIR", help="run folder (checkpoints, logs, resolved config)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CKPT",
        help="resume from a checkpoint (weights, optimizer, scheduler, epoch, step); "
        "without a value: OUTPUT/checkpoints/last.ckpt if it exists. Without --config the run's own "
        "OUTPUT/config.yaml is the config (overrides apply on top)",
    )
    add_shared_options(parser, "overwrite", overwrite="replace the run in OUTPUT: its config.yaml, checkpoints/, "
                       "logs/ and val_metrics.json are deleted once the new run has started (config, data, model "
                       "built); other files are kept")  # fmt: skip
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any key (data.augment.mosaic_p=0), as --data.augment.mosaic_p 0 does",
    )
    add_config_options(parser, SECTIONS)
    parser.set_defaults(func=run)


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides of the command line: ``--set KEY=VALUE`` and ``--section.key VALUE``."""
    from bicorseg.typedconfig import parse_value

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value)
    for key, value in vars(args).items():
        if key.startswith("override__"):
            if isinstance(value, list):  # a repeated option: its values joined into one list
                parsed = [parse_value(v) for v in value]
                value_list = [v for p in parsed for v in (p if isinstance(p, list) else [p])]
                overrides[key.removeprefix("override__")] = (
                    value_list if len(value_list) > 1 else value_list[0]
                )
            else:
                overrides[key.removeprefix("override__")] = parse_value(value)
    return overrides


def run(args: argparse.Namespace) -> int:
    from bicorseg.training.config import load_config, resolve_config_path

    overrides = collect_overrides(args)
    path = resolve_config_path(args.config) if args.config else None
    if path is None and args.resume is not None and args.output:
        own = Path(args.output) / "config.yaml"  # a resumed run keeps its own settings
        path = own if own.is_file() else None
    config = load_config(path, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if not args.output:
        raise ConfigError("give the run folder", key="output")
    from lightning.pytorch.utilities import rank_zero_only

    from bicorseg.training.run import TrainingInterrupted, train

    if args.resume == "auto" and rank_zero_only.rank == 0:
        last = Path(args.output) / "checkpoints" / "last.ckpt"
        print(f"resuming from {last}" if last.is_file() else f"no {last} yet: starting a new run")
    try:
        result = train(config, args.output, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if rank_zero_only.rank == 0:
            from bicorseg.cli.main import error_line

            print(
                f"bicorseg train: {error_line(stop, getattr(args, 'command_parser', None))}", file=sys.stderr
            )
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
