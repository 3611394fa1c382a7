"""``bicorseg vectorize``: polygons per class of a class raster (GeoPackage, FlatGeobuf, GeoJSON, GeoParquet)."""

from __future__ import annotations

import argparse

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import add_shared_options, print_summary, read_class_table
from bicorseg.gis import DEFAULT_MAX_POLYGONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vectorize",
        help="polygons per class of a class raster (.gpkg, .fgb, .geojson, .parquet)",
        description=(
            "Turn a class raster (as bicorseg predict writes) into polygons, one feature per connected "
            "region of a class, with the fields class_id, class_name, area_m2 and perimeter_m, in the "
            "raster's CRS (GeoJSON: WGS 84 longitude/latitude, as RFC 7946 asks). The polygons are a "
            "coverage: neighbours share their edges vertex for vertex, simplified or not, so they have "
            "neither gaps nor overlaps. The raster is read in windows; polygons cut by window seams are "
            "dissolved. Areas are in square metres (planar for projected CRSs that keep areas, on the "
            "ellipsoid otherwise). Nodata pixels belong to no polygon. "
            'Needs the extra: pip install "bicorseg[vector]".'
        ),
    )
    parser.add_argument("raster", metavar="RASTER", help="single-band class raster")
    parser.add_argument("--output", required=True, help="OUT.gpkg, OUT.fgb, OUT.geojson or OUT.parquet")
    parser.add_argument(
        "--simplify",
        type=float,
        default=None,
        help="simplification tolerance in the raster's CRS units, shared edges simplified once for "
        "both polygons (default 1.5 pixels; 0 keeps the pixel edges)",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        help="merge regions smaller than this (m2) into the class most common around them before "
        "making polygons: removes speckle and keeps the coverage whole (default 0: every region)",
    )
    parser.add_argument(
        "--to-crs",
        default=None,
        help="reproject the polygons (e.g. EPSG:3035); 'raster' keeps the raster's CRS, also for GeoJSON "
        "(default: the raster's CRS; GeoJSON: WGS 84)",
    )
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS", help="class names or ids")
    add_shared_options(parser, "class_table", "window")
    parser.add_argument(
        "--max-polygons",
        type=int,
        default=DEFAULT_MAX_POLYGONS,
        help=f"refuse a window with more regions than this (default {DEFAULT_MAX_POLYGONS:,}; memory "
        "grows by about 3 KiB per region)",
    )
    add_shared_options(parser, "allow_remote", "overwrite", overwrite="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.gis import require_vector

    require_vector()
    ensure_writable(args.output)
    from bicorseg.gis.polygons import VectorizeOptions, vectorize_raster

    options = VectorizeOptions(
        simplify=args.simplify,
        min_area=args.min_area,
        to_crs=args.to_crs,
        classes=args.classes,
        class_table=read_class_table(args.class_table),
        window=args.window,
        max_polygons=args.max_polygons,
        overwrite=args.overwrite,
    )
    summary = vectorize_raster(args.raster, args.output, options)
    if not args.quiet:
        print_summary(summary)
    return 0
