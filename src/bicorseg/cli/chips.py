"""``bicorseg chips``: training chips and masks of a geo dataset written to a folder dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import add_config_options, collect_overrides, counter
from bicorseg.errors import ConfigError, OutputError
from bicorseg.training.config import DataConfig, dataset_spec, load_config, resolve_config_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chips",
        help="cut chips and masks from rasters and labelled polygons into a folder dataset",
        description=(
            "Draw training chips from georeferenced rasters and their labels as training does (windows "
            "drawn toward the labelled pixels, never overlapping the validation area) and write them, with "
            "every window of the validation area, as a folder dataset: OUTPUT/train/{images,masks}, "
            "OUTPUT/val/{images,masks} (chips as GeoTIFFs in their raster's type, masks as PNGs of class "
            "indices) and OUTPUT/classes.yaml, its class table (written last). The data options are the "
            "train command's (--config geo and --data.*); chips are data.crop_size pixels."
        ),
    )
    parser.add_argument(
        "--config", metavar="NAME|FILE", default="geo", help="config file or shipped config (default: geo)"
    )
    parser.add_argument("--output", metavar="DIR", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--count", type=int, help="training chips to write (default: data.chips_per_epoch)")
    parser.add_argument("--seed", type=int, help="seed of the draw (default: trainer.seed)")
    add_config_options(parser, {"data": DataConfig})
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    ensure_writable(output, folder=True)
    if output.is_dir() and any(output.iterdir()):
        raise OutputError(f"{output} exists and is not an empty folder: choose a new folder")
    config = load_config(resolve_config_path(args.config), collect_overrides(args))
    data = config.data
    if data.dataset != "geo":
        raise ConfigError(
            f"chips are cut from geo datasets (rasters and labels), not {data.dataset!r}", key="data.dataset"
        )
    count = data.chips_per_epoch if args.count is None else args.count
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")

    from bicorseg.data.geo.chips import write_chips

    split = data.geo_split(dataset_spec(data), data.crop_size)
    try:
        print("\n".join(split.summary()), file=sys.stderr)
        seed = config.trainer.seed if args.seed is None else args.seed
        val = write_chips(split, output, count, seed=seed, progress=counter("writing chips"))
    finally:
        split.source.close()
    print(f"wrote {count} training and {val} validation chips of {data.crop_size} px to {output}")
    print(
        f"  train on them: bicorseg train --config folder --data.root {output} --data.class_table "
        f"{output / 'classes.yaml'} --data.train_splits '[train]' --data.val_split val --data.val_fraction null"
    )
    return 0
