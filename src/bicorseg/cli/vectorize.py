"""``bicorseg vectorize``: polygons per class of a class raster (GeoPackage, FlatGeobuf, GeoJSON, GeoParquet)."""

from __future__ import annotations

import argparse
import sys

from bicorseg.atomic import ensure_writable
from bicorseg.raster_access import ALLOW_REMOTE_HELP, remote_access


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vectorize",
        help="polygons per class of a class raster (.gpkg, .fgb, .geojson, .parquet)",
        description=(
            "Turn a class raster (as bicorseg predict writes) into polygons, one feature per connected "
            "region of a class, with the fields class_id, class_name, area_m2 and perimeter_m, in the "
            "raster's CRS. The raster is read in windows; polygons cut by window seams are dissolved, so "
            "the result does not depend on the window size. Areas are in square metres (planar for "
            "projected CRSs that keep areas, on the ellipsoid otherwise). Nodata pixels belong to no "
            'polygon. Needs the extra: pip install "bicorseg[vector]".'
        ),
    )
    parser.add_argument("raster", metavar="RASTER", help="single-band class raster")
    parser.add_argument("--output", required=True, help="OUT.gpkg, OUT.fgb, OUT.geojson or OUT.parquet")
    parser.add_argument(
        "--simplify",
        type=float,
        default=None,
        help="Douglas-Peucker tolerance in the raster's CRS units, topology preserved per polygon "
        "(default 1.5 pixels; 0 keeps the pixel edges)",
    )
    parser.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (m2)")
    parser.add_argument("--to-crs", default=None, help="reproject the polygons (e.g. EPSG:4326)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS", help="class names or ids")
    parser.add_argument("--class-table", default=None, help="YAML class table (default: the raster's tags)")
    parser.add_argument("--window", type=int, default=2048, help="window size in pixels (default 2048)")
    parser.add_argument("--allow-remote", action="store_true", help=ALLOW_REMOTE_HELP)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no summary")
    parser.set_defaults(func=run)


def print_summary(summary, file=None) -> None:
    """One line for the output and one per class, for the vectorize and predict commands."""
    file = file or sys.stderr
    print(
        f"{summary.raster.name} -> {summary.output}: {summary.features} polygon(s), areas {summary.area_method}, "
        f"simplified at {summary.simplify:g} CRS units, {summary.windows} window(s), {summary.seconds:.1f} s",
        file=file,
    )
    for entry in sorted(summary.classes.values(), key=lambda c: c.class_id):
        print(
            f"  {entry.class_id:>3} {entry.class_name:<20} {entry.features:>8} polygons {entry.area_m2:>16.1f} m2",
            file=file,
        )


def run(args: argparse.Namespace) -> int:
    from bicorseg.gis import require_vector

    require_vector()
    ensure_writable(args.output)
    from bicorseg.cli.predict import one_line_warnings
    from bicorseg.gis.polygons import VectorizeOptions, vectorize_raster

    options = VectorizeOptions(
        simplify=args.simplify,
        min_area=args.min_area,
        to_crs=args.to_crs,
        classes=args.classes,
        class_table=args.class_table,
        window=args.window,
        overwrite=args.overwrite,
    )
    with one_line_warnings("vectorize"), remote_access(args.allow_remote):
        summary = vectorize_raster(args.raster, args.output, options)
    if not args.quiet:
        print_summary(summary)
    return 0
