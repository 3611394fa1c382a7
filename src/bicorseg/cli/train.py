"""``bicorseg train``: train or resume BiCoR-Seg from a YAML config with command-line overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bicorseg.cli.common import SHARED_OPTIONS, add_config_options, add_shared_options, collect_overrides
from bicorseg.errors import ConfigError
from bicorseg.training.config import SECTIONS, load_config, resolve_config_path, shipped_names
from bicorseg.typedconfig import to_yaml

USAGE = (
    "bicorseg train --config NAME|FILE --output DIR [--SECTION.KEY VALUE ...] [--set KEY=VALUE ...]\n"
    "                      [--resume [CKPT]] [--print-config]"
)


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_shared_options(
        parser, "threads", threads=SHARED_OPTIONS["threads"]["help"] + " (the same as --trainer.num_threads)"
    )
    add_config_options(parser, SECTIONS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = collect_overrides(args)
    if args.threads is not None:
        if overrides.get("trainer.num_threads", args.threads) != args.threads:
            raise ConfigError(f"--threads {args.threads} and trainer.num_threads: give one of them")
        overrides["trainer.num_threads"] = args.threads
    path = resolve_config_path(args.config) if args.config else None
    if path is None and args.resume is not None and args.output:
        own = Path(args.output) / "config.yaml"  # a resumed run keeps its own settings
        path = own if own.is_file() else None
    config = load_config(path, overrides)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    if not args.output:
        raise ConfigError("give the run folder", key="output")
    from lightning.pytorch.utilities import rank_zero_only

    from bicorseg.cli.main import error_line
    from bicorseg.training.run import TrainingInterrupted, train

    # one process of a data-parallel run prints; the rank is read each time, as the trainer sets the
    # global rank during train() (before it, a second node's process reads its local rank, 0)
    if args.resume == "auto" and rank_zero_only.rank == 0:
        last = Path(args.output) / "checkpoints" / "last.ckpt"
        print(f"resuming from {last}" if last.is_file() else f"no {last} yet: starting a new run")
    try:
        result = train(config, args.output, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if rank_zero_only.rank == 0:
            print(f"bicorseg train: {error_line(stop, args.command_parser)}", file=sys.stderr)
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
