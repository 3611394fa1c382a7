"""``bicorseg heatmaps``: export the per-layer class heatmaps and the interpretability figure (docs/METHOD.md, section 3)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import TILING, add_shared_options, read_class_table
from bicorseg.errors import ConfigError, OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "heatmaps",
        help="export per-layer class heatmaps and the figure image / truth / prediction / heatmaps",
        description=(
            "For each input, write every HBIS layer's sigmoid class heatmaps (1/4 resolution; a float32 "
            "GeoTIFF per layer with one band per class for raster input, one grey PNG per layer and class "
            "for PNG/JPEG input) and OUTPUT/<stem>_heatmaps.png: the image, the ground truth (--label), the "
            "prediction and the heatmaps of one layer."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image/raster files or folders of them")
    add_shared_options(parser, "checkpoint")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--layer", type=int, default=None, help="layer shown in the figure, 1..L (default: last)"
    )
    parser.add_argument("--label", default=None, help="ground-truth raster for the figure (one input only)")
    add_shared_options(parser, "class_table", class_table="YAML class table decoding --label (colours or raw "
                       "values); default: the label encoding stored in the checkpoint")  # fmt: skip
    add_shared_options(
        parser,
        *TILING,
        "rescale",
        "batch_size",
        "device",
        "precision",
        "allow_remote",
        "overwrite",
        overwrite="replace heatmap files that exist in the output folder",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.data.io import find_inputs
    from bicorseg.device import resolve_device
    from bicorseg.inference.heatmaps import export_heatmaps, heatmap_targets
    from bicorseg.inference.model_info import model_info
    from bicorseg.inference.predictor import PredictOptions
    from bicorseg.inference.writers import check_targets
    from bicorseg.precision import with_precision

    # validates them
    PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, rescale=args.rescale)
    paths = find_inputs(args.inputs)
    if args.label is not None and len(paths) != 1:
        raise ConfigError(f"--label needs exactly one input, got {len(paths)}")
    if args.class_table is not None and args.label is None:
        raise ConfigError("--class-table decodes --label: give --label too")
    table = read_class_table(args.class_table)
    ensure_writable(args.output, folder=True)
    device = str(resolve_device(args.device))
    checkpoint = load_checkpoint(args.checkpoint)  # load_model's steps, keeping the checkpoint's tiling
    model = with_precision(checkpoint.build_model().to(device), args.precision, device)
    info = model_info(model, str(args.checkpoint), checkpoint.tiling)
    tile = checkpoint.tiling.tile if args.tile is None else args.tile
    overlap = checkpoint.tiling.overlap if args.overlap is None else args.overlap
    output = Path(args.output)
    targets = {p: heatmap_targets(p, output, info, model.config.layers) for p in paths}
    check_targets(targets)
    existing = [t for files in targets.values() for t in files.values() if os.path.lexists(t)]
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more heatmap files)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]} exists{more}: use --overwrite to replace it")
    for path in paths:
        result = export_heatmaps(
            model,
            path,
            args.output,
            layer=args.layer,
            label=args.label,
            labels=None if table is None else table.labels,
            tile=tile,
            overlap=overlap,
            batch_size=args.batch_size,
            device=device,
            info=info,
            rescale=args.rescale,
        )
        print(f"{path.name}: {len(result.outputs)} heatmap file(s), figure {result.figure}", file=sys.stderr)
    print(f"heatmaps of {len(paths)} file(s) in {Path(args.output)}", file=sys.stderr)
    return 0
