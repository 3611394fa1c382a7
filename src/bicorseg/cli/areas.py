"""``bicorseg areas``: pixels, square metres, hectares and percent per class of a class raster."""

from __future__ import annotations

import argparse

from bicorseg.cli.common import add_shared_options, read_class_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "areas",
        help="area per class of a class raster (table, .json or .csv)",
        description=(
            "Count the pixels of each class of a class raster and give their area in square metres, "
            "hectares and percent of the valid area (nodata excluded), as a table and optionally as "
            "JSON or CSV. Geographic CRSs are measured on the ellipsoid, never in degrees. With --aoi "
            "only pixels whose centre lies inside the polygons count. The raster is read in windows. "
            'Needs the extra: pip install "bicorseg[vector]".'
        ),
    )
    parser.add_argument("raster", metavar="RASTER", help="single-band class raster")
    add_shared_options(parser, "aoi", aoi="polygons (any OGR format with a CRS) to count inside")
    parser.add_argument("--output", default=None, help="areas.json or areas.csv (default: the table only)")
    add_shared_options(parser, "class_table", "window")
    add_shared_options(parser, "allow_remote", "overwrite", overwrite="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.gis import require_vector

    require_vector()
    from bicorseg.gis.areas import AreaOptions, check_areas_path, class_areas, write_areas

    if args.output is not None:
        check_areas_path(args.output, args.overwrite)
    options = AreaOptions(aoi=args.aoi, class_table=read_class_table(args.class_table), window=args.window)
    report = class_areas(args.raster, options)
    if args.output is not None:
        write_areas(report, args.output, overwrite=args.overwrite)
    if not args.quiet:
        _print_table(report)
    return 0


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # names and paths are data, never rich markup: Text cells are printed as they are
    title = f"{report.raster}: areas {report.area_method}" + (f", inside {report.aoi}" if report.aoi else "")
    table = Table(title=Text(title))
    for column in ("class", "name", "pixels", "m2", "ha", "%"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in report.classes:
        table.add_row(str(row.class_id), Text(row.class_name), f"{row.pixels:,}", f"{row.area_m2:,.1f}",
                      f"{row.area_ha:,.4f}", f"{row.percent:.2f}")  # fmt: skip
    table.add_row("", "total (valid)", f"{report.total_pixels:,}", f"{report.total_m2:,.1f}",
                  f"{report.total_ha:,.4f}", "100.00" if report.total_m2 > 0 else "0.00")  # fmt: skip
    Console(width=120).print(table)
