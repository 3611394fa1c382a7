"""``bicorseg predict``: segment images or georeferenced rasters of any size, in one process or many.

Two options choose how a run executes, and they are different things: ``--engine`` is the model's
runtime (``torch`` or ``onnx``; ``auto`` picks by the checkpoint), ``--executor`` where the units of
work run (``local``: this process, or ``--devices N`` worker processes; ``ray``: actors on a Ray
cluster, with the torch or onnx runtime inside each). ``--shard i/N`` restricts any of them to one
shard's units.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import (
    SHARED_OPTIONS,
    TILING,
    TTA,
    RichProgress,
    add_shared_options,
    checkpoint_tiling,
    print_summary,
    sigterm_interrupts,
    tta_options,
)
from bicorseg.defaults import DEFAULT_BLOCK, ENGINES, EXECUTORS
from bicorseg.errors import BicorsegWarning, ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images or georeferenced rasters of any size",
        description=(
            "Segment image files or rasters (files or folders). A raster gives OUTPUT/<stem>.tif: a "
            "Cloud-Optimized GeoTIFF of uint8 class indices with overviews, nodata 255, the input's CRS and "
            "transform, the class colours as colour table, and OUTPUT/<stem>.qml (a QGIS style). PNG/JPEG gives "
            "OUTPUT/<stem>.png. Rasters are planned as blocks of one global tile grid and read and written in "
            "windows (memory does not grow with their size); tiles overlap and are blended with smooth "
            "weights. Masked, NaN and undeclared float nodata pixels (far outside the checkpoint's statistics) "
            "come out as nodata. Outputs appear only when complete and record the checkpoint's sha256 and "
            "settings; a file whose outputs exist and were made by the same checkpoint and settings is skipped, "
            "other existing outputs are refused unless --overwrite is given. No output may overwrite an input. "
            "An INPUT may be a URL (https://, s3://, gs://, az://) or a GDAL /vsi... path, read in ranges; "
            "naming one is asking for remote access (no --allow-remote needed). "
            "--devices, --shard and --executor ray split the blocks of all inputs across processes, machines "
            "or a Ray cluster with the same bytes as one process; 'bicorseg mosaic' assembles shards."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image/raster files or folders of them, URLs (https://, s3://, gs://, az://) or /vsi... paths",
    )
    add_shared_options(
        parser, "checkpoint", checkpoint="a bicorseg checkpoint, or a .onnx file from bicorseg export"
    )
    parser.add_argument("--output", required=True, help="output folder")
    add_shared_options(parser, *TILING, "batch_size")
    parser.add_argument(
        "--block",
        type=int,
        default=DEFAULT_BLOCK,
        help=f"side of the units of work in pixels (default {DEFAULT_BLOCK}): memory grows with it, tiles "
        "shared by neighbouring blocks are computed twice",
    )
    add_shared_options(parser, *TTA, "rescale")
    parser.add_argument(
        "--probabilities",
        nargs="?",
        const="uint8",
        default=None,
        choices=("uint8", "float32"),
        help="also write <stem>_prob.tif, one band per class: uint8 = round(254 p) with nodata 255 "
        "(default when given without a value) or float32 with nodata NaN",
    )
    parser.add_argument("--color", action="store_true", help="also write the colourised map <stem>_color.*")
    parser.add_argument(
        "--confidence",
        action="store_true",
        help="also write <stem>_confidence.tif: the largest class probability, the normalised entropy and, "
        "with --tta, the fraction of passes whose arg-max differs from the merged one",
    )
    add_shared_options(parser, "aoi", aoi="area of interest (polygons: PATH or PATH|layername=NAME, any OGR format with a CRS): only tiles "
                       'with a pixel inside are computed, pixels outside are nodata (needs pip install "bicorseg[vector]")')  # fmt: skip
    parser.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="the runtime: torch (PyTorch), onnx (ONNX Runtime), or auto: onnx for a .onnx checkpoint, "
        "else torch (default: auto)",
    )
    add_shared_options(
        parser,
        "precision",
        "device",
        "threads",
        threads=SHARED_OPTIONS["threads"]["help"]
        + "; on a CPU it is part of the settings the outputs record, "
        "and every worker process and Ray actor of the run uses it: any partition gives the same bytes",
    )
    scale = parser.add_argument_group("scaling out (the same bytes as one process)")
    scale.add_argument(
        "--devices",
        type=int,
        default=1,
        help="worker processes over the blocks of all inputs: one per GPU with --device cuda (cuda:0.."
        "N-1), else N CPU processes of --threads threads each; with --executor ray, the number of actors "
        "(default 1)",
    )
    scale.add_argument(
        "--shard",
        metavar="i/N",
        default=None,
        help="compute only shard i of N (round-robin over the blocks of all inputs) as parts in "
        "OUTPUT/bicorseg_parts; auto/N reads i from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or "
        "AWS_BATCH_JOB_ARRAY_INDEX; assemble with 'bicorseg mosaic OUTPUT'",
    )
    scale.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help='where the units run: local (this process or --devices workers) or ray (pip install "bicorseg[ray]")',
    )
    scale.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to connect to (default: a local cluster for this run; auto: a running one)",
    )
    parser.add_argument(
        "--vector",
        choices=("gpkg", "fgb", "geojson", "parquet"),
        default=None,
        help="also write the polygons of each class raster, <stem>.<format>, as bicorseg vectorize does "
        "with its defaults; rewritten whenever the class raster is, written if missing for a skipped "
        "file; every input needs a CRS and a transform (or --crs and --pixel-size), checked before any "
        'work (needs pip install "bicorseg[vector]")',
    )
    parser.add_argument(
        "--crs",
        default=None,
        help="the CRS of inputs that have none (e.g. EPSG:32633): their outputs become GeoTIFFs in it, plain "
        "pictures included; inputs with their own CRS keep it",
    )
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="with --crs: the pixel size in CRS units of inputs without a transform (a plain picture); the "
        "map's lower-left corner is put at the CRS's origin (0, 0): the right scale for areas, not a place",
    )
    parser.add_argument(
        "--stac-item",
        action="append",
        default=[],
        metavar="ITEM",
        help="a STAC Item (JSON file or http(s) URL; repeatable): its assets holding the checkpoint's bands "
        "(eo:bands common names, else asset keys) are stacked and predicted as OUTPUT/<item id>.tif; "
        "remote assets of a local item need --allow-remote",
    )
    parser.add_argument(
        "--stac-assets",
        nargs="+",
        default=None,
        metavar="KEY",
        help="the asset keys to take the bands from when the choice is ambiguous (or the checkpoint names "
        "no bands: then their bands in this order)",
    )
    parser.add_argument(
        "--stac-out",
        action="store_true",
        help="also write OUTPUT/<stem>_item.json, a STAC Item per class raster (footprint in EPSG:4326, "
        "projection, classification:classes, the outputs as assets, a derived_from link to the source "
        "item); rewritten whenever the class raster is, written if missing for a skipped file",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write OUTPUT/report.html: each image under its prediction (opacity slider), the legend "
        "with per-class areas; one self-contained page, see bicorseg report",
    )
    add_shared_options(parser, "overwrite", overwrite="redo files whose outputs already exist, also outputs of "
                       "another checkpoint or settings (never an input)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options and exit")
    add_shared_options(parser, "allow_remote")
    # core parameters named otherwise here (errors of bicorseg.gis.stac name them)
    parser.set_defaults(func=run, parameter_options={"assets": "--stac-assets"})


def resolve_engine(engine: str, checkpoint: str) -> str:
    """``auto`` -> ``onnx`` for a ``.onnx`` checkpoint, else ``torch``; a mismatch is refused."""
    onnx_file = Path(checkpoint).suffix.lower() == ".onnx"
    if engine == "auto":
        return "onnx" if onnx_file else "torch"
    if engine == "torch" and onnx_file:
        raise ConfigError(
            f"--checkpoint {checkpoint} is an ONNX model: run it with --engine onnx (or --engine auto), "
            "or give the checkpoint it was exported from"
        )
    return engine


def run(args: argparse.Namespace) -> int:
    from bicorseg.device import resolve_threads
    from bicorseg.inference.batch import predict_files
    from bicorseg.inference.predictor import PredictOptions
    from bicorseg.inference.units import PARTS_FOLDER, parse_shard

    args.engine = resolve_engine(args.engine, args.checkpoint)
    shard = parse_shard(args.shard) if args.shard is not None else None
    if not args.inputs and not args.stac_item:
        raise ConfigError("give at least one INPUT (a file, folder or URL) or --stac-item")
    if args.stac_assets and not args.stac_item:
        raise ConfigError("--stac-assets chooses the assets of --stac-item: give --stac-item too")
    whole = [name for name in ("vector", "stac_out", "report") if getattr(args, name)]
    if shard is not None and whole:
        made = ", ".join("--" + name.replace("_", "-") for name in whole)
        raise ConfigError(
            f"{made} are made from whole maps, which a shard does not hold: leave them out of the shards, "
            "then after 'bicorseg mosaic' run the command again with them and without --shard "
            "(it skips the finished maps)"
        )
    # each option but the TTA's is named as its PredictOptions field (tile, overlap None: the checkpoint's)
    named = {field.name for field in dataclasses.fields(PredictOptions)} - {*TTA, "require_georeference"}
    options = PredictOptions(
        **{name: getattr(args, name) for name in named},
        **tta_options(args),
        require_georeference=bool(args.vector),
    )
    if args.print_config:
        from bicorseg import typedconfig

        tiling = checkpoint_tiling(args.checkpoint, args.engine, args.tile, args.overlap)
        threads = resolve_threads(args.threads)
        options = dataclasses.replace(options, tile=tiling.tile, overlap=tiling.overlap, threads=threads)
        names = ("inputs", "checkpoint", "output", "engine", "executor", "devices", "shard", "vector")
        resolved = {name: getattr(args, name) for name in (*names, "stac_item", "stac_assets", "stac_out")}
        resolved["shard"] = None if shard is None else f"{shard[0]}/{shard[1]}"
        print(
            typedconfig.to_yaml({**resolved, **typedconfig.to_plain(options), "tiling_from": tiling.source}),
            end="",
        )
        return 0
    if args.vector or args.aoi:
        from bicorseg.gis import require_vector

        require_vector()  # before any prediction is made
    if args.stac_item or args.stac_out:
        from bicorseg.gis.stac import require_cloud

        require_cloud()
    ensure_writable(args.output, folder=True)
    progress = RichProgress(enabled=not args.quiet and sys.stderr.isatty())

    def report(result) -> None:
        if result.assembled and not result.skipped and not args.quiet:
            progress.bar.console.print(
                f"{result.input.name} -> {result.outputs['class']} ({result.seconds:.1f} s)"
            )

    with ExitStack() as stack:
        stack.enter_context(sigterm_interrupts())  # a stopped run ends its workers, leaves no temporary
        items = _stac_inputs(args, stack)
        with progress.bar:
            results = predict_files(
                [*args.inputs, *items],
                args.checkpoint,
                args.output,
                options,
                engine=args.engine,
                devices=args.devices,
                progress=progress,
                on_result=report,
                shard=shard,
                executor=args.executor,
                ray_address=args.ray_address,
            )
        skipped = sum(r.skipped for r in results)
        if shard is not None:
            if not args.quiet:
                computed = sum(r.computed for r in results)
                there = sum(r.units - r.computed for r in results if not r.skipped)
                notes = (f", {there} already there" if there else "") + (
                    f", {skipped} file(s) already done" if skipped else ""
                )
                print(
                    f"shard {shard[0]}/{shard[1]}: computed {computed} unit(s) into "
                    f"{Path(args.output) / PARTS_FOLDER}{notes}; when every shard is done: "
                    f"bicorseg mosaic {args.output}",
                    file=sys.stderr,
                )
            return 0
        if args.vector:
            _vectorize(results, args)
        if args.stac_out:
            _stac_items(results, args, items)
        if args.report:  # while the inputs (STAC items' stacks too) are still there
            page = _report(results, args)
            if not args.quiet:
                print(f"report written to {page}", file=sys.stderr)
    if not args.quiet:
        note = f", {skipped} already done (skipped)" if skipped else ""
        written = sum(r.assembled and not r.skipped for r in results)
        print(f"predicted {written} file(s) into {Path(args.output)}{note}", file=sys.stderr)
    return 0


def _report(results, args: argparse.Namespace) -> Path:
    """OUTPUT/report.html over every input and its class map (names from the model for PNG maps)."""
    from bicorseg.report import REPORT_NAME, ReportItem, write_report

    names = palette = None
    if any(result.outputs["class"].suffix != ".tif" for result in results):  # PNG maps carry no names
        from bicorseg.inference.predictor import checkpoint_info

        info = checkpoint_info(args.checkpoint, args.engine)
        names, palette = info.class_names, info.palette.tolist()
    items = [
        ReportItem(result.outputs["class"], result.input, class_names=names, palette=palette)
        for result in results
    ]
    return write_report(
        items,
        Path(args.output) / REPORT_NAME,
        title=f"bicorseg predict: {Path(args.output).name}",
        subtitle=f"{len(items)} input(s), checkpoint {Path(args.checkpoint).name}",
    )


def _vectorize(results, args: argparse.Namespace) -> None:
    """Polygons of each class raster: written when its raster was (re)written or when they are missing."""
    from bicorseg.gis.polygons import VectorizeOptions, vectorize_raster
    from bicorseg.gis.vectorfile import FORMATS

    suffix = FORMATS[args.vector][0]
    for result in results:  # every input was checked to have a CRS and a transform before any work
        raster = result.outputs["class"]
        target = raster.with_suffix(suffix)
        if result.skipped and target.exists():
            continue
        summary = vectorize_raster(raster, target, VectorizeOptions(overwrite=True))
        if not args.quiet:
            print_summary(summary)


def _stac_inputs(args: argparse.Namespace, stack: ExitStack) -> dict:
    """The VRT of each --stac-item (in a temporary folder that lives as long as ``stack``)."""
    if not args.stac_item:
        return {}
    from bicorseg.gis.stac import stac_input
    from bicorseg.inference.predictor import checkpoint_info

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bicorseg-stac-"))
    info = checkpoint_info(args.checkpoint, args.engine)
    bands = info.dataset.bands if info.dataset else None
    items = {}
    for href in args.stac_item:
        entry = stac_input(href, bands, info.in_channels, folder, args.stac_assets)
        # an item URL the user named allows the remote reads of its own VRT, not of the other inputs
        items[entry.input] = entry
    return items


def _stac_items(results, args: argparse.Namespace, items: dict) -> None:
    """A STAC Item per class raster: written when its raster was (re)written or when it is missing."""
    from bicorseg.gis.stac import item_path, write_output_item

    for result in results:
        raster = result.outputs["class"]
        if raster.suffix != ".tif":
            warnings.warn(
                f"{raster} is not georeferenced: no STAC Item written for it", BicorsegWarning, stacklevel=1
            )
            continue
        target = item_path(raster)
        if result.skipped and target.exists():
            continue
        others = {kind: path for kind, path in result.outputs.items() if kind != "class"}
        if args.vector:
            from bicorseg.gis.vectorfile import FORMATS

            others["polygons"] = raster.with_suffix(FORMATS[args.vector][0])
        write_output_item(raster, others, items.get(result.input))
        if not args.quiet:
            print(f"{raster.name} -> {target.name} (STAC Item)", file=sys.stderr)
