"""``bicorseg evaluate``: per-class and mean scores of a checkpoint on a dataset split, with the convention."""

from __future__ import annotations

import argparse

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import (
    EVALUATION_PRECISION_HELP,
    TILING,
    TTA,
    add_shared_options,
    class_table_file,
    counter,
    evaluation_precision,
    tta_options,
)
from bicorseg.defaults import DEFAULT_BATCH_SIZE
from bicorseg.errors import ConfigError
from bicorseg.spec import DATASET_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on a dataset split (per-class table, mIoU, F1, OA; JSON)",
        description=(
            "Accumulate one confusion matrix over a split and report per-class IoU, precision, recall "
            "and F1, their means over the dataset's evaluation classes (ISPRS: without clutter) and the "
            "overall accuracy over all classes. The report states its convention: classes averaged, "
            "label variant, patches or whole tiles, the data preparation protocol, test-time augmentation "
            "and its passes."
        ),
    )
    add_shared_options(parser, "checkpoint")
    parser.add_argument(
        "--dataset",
        required=True,
        choices=DATASET_KINDS,
        help="dataset kind (synthetic: procedural samples, for smoke tests)",
    )
    parser.add_argument("--root", help="the prepared dataset folder (output of 'bicorseg prepare')")
    parser.add_argument(
        "--split", help="split to score (default: test; geo data: a name for the report, default: labelled)"
    )
    add_shared_options(parser, *TTA, "rescale")
    parser.add_argument("--output", help="write the report as JSON here")
    add_shared_options(parser, "overwrite", overwrite="replace an existing --output file")
    parser.add_argument(
        "--whole-tiles",
        action="store_true",
        help="predict whole tiles with overlapping sliding windows instead of scoring patches",
    )
    folder = parser.add_argument_group("folder datasets")
    add_shared_options(folder, "class_table", class_table="YAML class table (colour masks, or raw values to "
                       "map); default: the label encoding stored in the checkpoint (the class table it was trained with)")  # fmt: skip
    folder.add_argument("--images", default="images", help="name of the image folders (default: images)")
    folder.add_argument("--masks", default="masks", help="name of the mask folders (default: masks)")
    geo = parser.add_argument_group(
        "GIS data (--dataset geo): every labelled pixel of rasters and their label polygons or raster, "
        "scored in windows of --tile px (with --whole-tiles, windows of 4 tiles predicted by sliding windows)"
    )
    geo.add_argument("--rasters", nargs="+", action="extend", metavar="RASTER",
                     help="rasters: files, folders, glob patterns, URLs")  # fmt: skip
    geo.add_argument(
        "--labels", metavar="LAYER", help="label polygons (PATH or PATH|layername=NAME) or a label raster"
    )
    geo.add_argument("--label-field", help="the polygons' attribute holding their class name or code")
    geo.add_argument(
        "--labels-where", metavar="SQL", help="an attribute filter of the polygons (OGR SQL WHERE)"
    )
    geo.add_argument(
        "--priority-field",
        help="numeric attribute: the higher value wins overlaps (else the smaller polygon)",
    )
    geo.add_argument("--labelled-area", metavar="LAYER",
                     help="areas labelled completely: pixels no polygon covers inside are --background")  # fmt: skip
    geo.add_argument(
        "--background", default="background", help="the class of those pixels (default: background)"
    )
    geo.add_argument(
        "--strict", action="store_true", help="refuse invalid polygons instead of repairing them"
    )
    parser.add_argument(
        "--label-variant",
        help="state which labels these are in the report (e.g. eroded); default: the dataset's",
    )
    add_shared_options(parser, *TILING, tile="windows of geo data, and with --whole-tiles the sliding-window "
                       "tile, in pixels (default: the checkpoint's, the size it was trained on)",
                       overlap="--whole-tiles: the sliding-window tiles' overlap fraction in [0, 1) (default: "
                       "the checkpoint's)")  # fmt: skip
    add_shared_options(parser, "batch_size", batch_size="samples (or --whole-tiles windows) per model call "
                       f"(default: {DEFAULT_BATCH_SIZE})")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=0)
    add_shared_options(parser, "device", "precision", "threads", precision=EVALUATION_PRECISION_HELP)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N samples")
    add_shared_options(parser, "allow_remote")
    parser.set_defaults(func=run)


def _geo_labels(args: argparse.Namespace, dataset) -> str:
    """What a geo evaluation scored, for the report."""
    what = f"{args.labels}" + (f" (field {args.label_field})" if args.label_field else "")
    if args.labelled_area:
        what += f", inside {args.labelled_area} pixels no polygon covers are {args.background!r}"
    return f"every labelled pixel of {len(dataset.source.rasters)} raster(s), labels {what}"


def run(args: argparse.Namespace) -> int:
    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.device import check_threads, resolve_device
    from bicorseg.evaluation import check_spec_matches, data_protocol, evaluate_model, evaluation_dataset
    from bicorseg.inference import PredictOptions
    from bicorseg.metrics import format_report, write_report_json
    from bicorseg.precision import with_precision

    PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)  # validates them
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1 sample, got {args.limit}")
    check_threads(args.threads)
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must not be negative, got {args.num_workers}")
    if args.output:
        ensure_writable(args.output, overwrite=args.overwrite)
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model()
    tile = checkpoint.tiling.tile if args.tile is None else args.tile
    overlap = checkpoint.tiling.overlap if args.overlap is None else args.overlap
    # the checkpoint's facts carry the normalisation it was trained with
    spec_hint = checkpoint.dataset
    if spec_hint is not None and spec_hint.num_classes != checkpoint.model_config.num_classes:
        spec_hint = None
    options: dict = {}
    geo_given = [o for o in ("rasters", "labels", "label_field", "labels_where", "priority_field", "labelled_area")
                 if getattr(args, o)]  # fmt: skip
    if args.dataset == "geo":
        if not args.rasters or not args.labels:
            raise ConfigError("--dataset geo needs --rasters and --labels")
        if args.root:
            raise ConfigError(
                "--root is for prepared and folder datasets; --dataset geo reads --rasters and --labels"
            )
        window = tile * (4 if args.whole_tiles else 1)
        options = {
            "images": args.rasters, "labels": args.labels, "label_field": args.label_field,
            "where": args.labels_where, "priority_field": args.priority_field,
            "labelled_area": args.labelled_area, "background": args.background,
            "class_table": class_table_file(args.class_table), "strict": args.strict, "window": window,
        }  # fmt: skip
    elif geo_given:
        raise ConfigError(f"--{geo_given[0].replace('_', '-')} is for --dataset geo")
    if args.dataset == "folder":
        options = {"images": args.images, "masks": args.masks}
        if args.class_table:
            options["class_table"] = class_table_file(args.class_table)
    elif args.class_table and args.dataset != "geo":
        raise ConfigError("--class-table is for --dataset folder or geo")
    if args.split is None:
        args.split = "labelled" if args.dataset == "geo" else "test"
    dataset, spec = evaluation_dataset(args.dataset, args.root, args.split, spec=spec_hint, **options)
    check_spec_matches(checkpoint.dataset, spec, checkpoint.model_config, args.checkpoint)
    paper = args.tta == "paper" or data_protocol(dataset).startswith("paper")
    model = with_precision(model, evaluation_precision(args.precision, paper), device)

    report = evaluate_model(
        model,
        dataset,
        spec,
        split=args.split,
        **tta_options(args),
        whole_tiles=args.whole_tiles,
        tile=tile,
        overlap=overlap,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=device,
        limit=args.limit,
        progress=counter("evaluating"),
        rescale=args.rescale,
        threads=args.threads,
    )
    report.convention.extra["checkpoint"] = str(args.checkpoint)
    if args.dataset == "geo":
        report.convention.extra["labels"] = _geo_labels(args, dataset)
    labels = getattr(dataset, "labels", None)  # folder datasets: how their masks were decoded
    if labels is not None:
        source = args.class_table or "the checkpoint's class table"
        report.convention.extra["masks"] = (
            f"{'colours' if labels.kind == 'colour' else 'values'} decoded by {source}"
            if labels.encoding().kind != "index"
            else "class indices"
        )
    if args.label_variant:
        report.convention.label_variant = args.label_variant
    print(format_report(report))
    if args.output:
        path = write_report_json(report, args.output)
        print(f"wrote {path}")
    return 0
