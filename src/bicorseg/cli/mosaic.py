"""``bicorseg mosaic``: assemble the parts that ``predict --shard`` runs left in an output folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import RichProgress, add_shared_options
from bicorseg.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mosaic",
        help="assemble the parts of a sharded predict run into its outputs",
        description=(
            "Assemble DIR/bicorseg_parts (written by 'bicorseg predict --shard i/N --output DIR') into "
            "DIR/<stem>.tif and the other outputs of each input: Cloud-Optimized GeoTIFFs with the same "
            "bytes, tags, colour table and georeferencing as a one-process predict. Inputs whose units are "
            "all there are assembled and their parts removed; for the others one line names the missing "
            "units and the shards that owe them (exit status 2). Parts of another checkpoint or settings "
            "are never mixed in."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="the output folder of the sharded predict runs")
    add_shared_options(parser, "overwrite", overwrite="replace existing outputs that another run made")
    parser.add_argument("--quiet", action="store_true", help="no progress and no summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.inference.units import mosaic

    ensure_writable(args.folder, folder=True)
    progress = RichProgress(enabled=not args.quiet and sys.stderr.isatty())
    with progress.bar:
        report = mosaic(args.folder, overwrite=args.overwrite, progress=progress)
    if report.missing:
        raise InputError(
            f"{report.missing_line()}; nothing assembled from incomplete parts"
            + (f" ({len(report.assembled)} complete file(s) assembled)" if report.assembled else "")
        )
    if not args.quiet:
        done = f", {len(report.already)} already assembled" if report.already else ""
        print(f"assembled {len(report.assembled)} file(s) in {Path(args.folder)}{done}", file=sys.stderr)
    return 0
