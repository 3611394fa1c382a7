"""``bicorseg report``: one self-contained HTML page for an output folder of predict, heatmaps or demo."""

from __future__ import annotations

import argparse
import sys

from bicorseg.cli.common import add_shared_options, read_class_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write DIR/report.html: image, prediction overlay, labels and errors, legend with areas, "
        "scale and coordinates, heatmaps, metrics",
        description=(
            "Write one self-contained HTML page (no network: pictures inlined, no external scripts, styles "
            "or fonts) for an output folder of bicorseg predict, heatmaps or demo: for every class raster "
            "written by predict, the image under the prediction with an opacity slider, the legend with "
            "per-class pixels, shares and areas in hectares, each HBIS layer's class heatmaps (found "
            "beside the prediction or in DIR/heatmaps) with a layer switch and class toggles, and the "
            "scores with their convention when DIR/metrics.json exists. With --labels, each scene's labels "
            "and its correct and wrong pixels as views to switch to, and its confusion per class. A raster "
            "with a CRS gets a scale bar, its corner coordinates and the coordinates under the pointer. "
            "Pictures of large rasters are decimated to --max-size pixels; areas and the confusion are "
            "counted on every pixel. Paths are written relative to the page."
        ),
    )
    parser.add_argument("folder", metavar="DIR", help="output folder of bicorseg predict, heatmaps or demo")
    parser.add_argument("--output", default=None, help="the page to write (default DIR/report.html)")
    parser.add_argument(
        "--images",
        nargs="+",
        default=(),
        metavar="PATH",
        help="where the input images are (files or folders; searched by the name the prediction records, "
        "then in DIR)",
    )
    parser.add_argument(
        "--labels",
        metavar="PATH",
        default=None,
        help="ground truth: a label raster (for the scene of its name, or the only scene) or a folder of "
        "them named like the inputs (<input stem>.tif, .png, ...): class indices (255 unlabelled), "
        "class colours, or what --class-table decodes",
    )
    parser.add_argument(
        "--max-size", type=int, default=2048, help="long side of the pictures in pixels (default 2048)"
    )
    add_shared_options(parser, "class_table", "overwrite", overwrite="replace an existing page",
                       class_table="YAML class table: the class names of class rasters without them, and how "
                       "--labels encode the classes")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.report import report_folder

    page = report_folder(
        args.folder,
        args.output,
        images=args.images,
        max_size=args.max_size,
        class_table=read_class_table(args.class_table),
        overwrite=args.overwrite,
        labels=args.labels,
    )
    print(f"report written to {page}", file=sys.stderr)
    return 0
