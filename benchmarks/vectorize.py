"""Benchmark of ``bicorseg vectorize``: wall time and peak resident memory on large and on hostile rasters.

Writes uint8 class GeoTIFFs (EPSG:32633, 0.5 m pixels, tiled, deflate, nodata 255, the demo's six
classes in the tags) and vectorises each to GeoPackage with ``bicorseg vectorize`` (default
simplification, 2048 px windows) in a fresh process, which reports its resident set after start-up
(torch and the CLI imported) and its peak (``VmHWM``, Linux):

* ``procedural`` rasters of 2048 and 12288 px squared, generated window by window: land parcels
  (field, bare ground, trees) on a jittered grid, smooth forest patches, a meandering river and
  lakes, a road grid with diagonals, blocks of buildings in urban parcels, a nodata corner. For
  sizes up to 4096 px the polygons are read back and checked as a coverage (GEOS's coverage
  validation, and the area covered twice);
* ``speckled``: 1200 x 1000 px, the left half one class with 99,567 one-pixel holes of another,
  vectorised as it is and with ``--min-area 1`` (regions under 4 pixels merged first);
* ``checkerboard``: 2048 px squared of one-pixel squares (4,194,304 regions in one window), refused
  by the polygon budget; and checkers of 4 x 4 px (262,144 regions) with the budget raised, to
  measure the memory per region.

Results go to ``benchmarks/results/vectorize.json`` and a table is printed.

    python benchmarks/vectorize.py                      # procedural 2048 and 12288, and the hostile cases
    python benchmarks/vectorize.py --sizes 4096 --no-hostile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "vectorize.json"
NAMES = ["bare ground", "field", "tree", "water", "road", "building"]
BARE, FIELD, TREE, WATER, ROAD, BUILDING = range(6)
# The child reports VmRSS after its imports and VmHWM at the end, both of its own address space (not
# ru_maxrss, which Linux carries over fork + exec from the parent that wrote the raster), and the CPU
# time of the command (all its threads): on a shared machine it moves less than the wall time.
CHILD = """
import json, sys, time
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
from bicorseg.cli.main import main
import bicorseg.gis.polygons
baseline = status("VmRSS:")
start, cpu = time.perf_counter(), time.process_time()
code = main(sys.argv[1:])
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print("BENCH " + json.dumps({"code": code, "seconds": seconds, "cpu_seconds": cpu,
                             "baseline_rss_bytes": baseline, "peak_rss_bytes": status("VmHWM:")}))
"""


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic value in [0, 1) per integer cell (the same in every window)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF) / 65536.0


def class_block(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Classes of the pixels ``[y0, y0 + h) x [x0, x0 + w)`` of the procedural landscape."""
    y = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
    x = np.arange(x0, x0 + w, dtype=np.float64)[None, :]
    parcel = 190.0
    py, px = np.floor((y + 37 * np.sin(x / 410.0)) / parcel), np.floor((x + 29 * np.sin(y / 370.0)) / parcel)
    kind = _hash(px, py, 1)
    out = np.where(kind < 0.5, FIELD, np.where(kind < 0.72, BARE, TREE)).astype(np.uint8)
    urban = (kind > 0.88) | (_hash(np.floor(px / 6), np.floor(py / 6), 2) < 0.12)
    forest = np.sin(x / 233.0) * np.cos(y / 317.0) + 0.6 * np.sin((x + 2 * y) / 151.0) > 1.05
    out[forest & ~urban] = TREE
    cell_y, cell_x = np.mod(y, 40.0), np.mod(x, 40.0)
    house = urban & (cell_y >= 8) & (cell_y < 30) & (cell_x >= 6) & (cell_x < 32)
    house &= _hash(np.floor(x / 40), np.floor(y / 40), 3) < 0.8
    out[urban] = BARE
    out[house] = BUILDING
    river = np.abs(y - (2600 + 500 * np.sin(x / 900.0) + 120 * np.sin(x / 170.0))) < 18 + 6 * np.sin(
        x / 300.0
    )
    lakes = np.sin(x / 520.0 + 1.3) * np.sin(y / 610.0 + 0.4) > 0.93
    out[river | lakes] = WATER
    road = (np.mod(y + 11 * np.sin(x / 260.0), 700.0) < 6) | (np.mod(x, 900.0) < 5)
    road |= np.mod(x - y, 2300.0) < 5
    out[road] = ROAD
    out[(x + y) < 300] = 255  # a nodata corner
    return out


def write_classes(path: Path, size: int) -> None:
    """The procedural class raster, written in blocks of 1024 rows (never held whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32633",
        transform=from_origin(500_000.0, 5_000_000.0, 0.5, 0.5), tiled=True, blockxsize=256,
        blockysize=256, compress="deflate", nodata=255,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(bicorseg_classes=json.dumps(NAMES))
        for y0 in range(0, size, 1024):
            h = min(1024, size - y0)
            for x0 in range(0, size, 4096):
                w = min(4096, size - x0)
                dst.write(class_block(y0, x0, h, w), 1, window=Window(x0, y0, w, h))


def write_array(path: Path, classes: np.ndarray) -> None:
    """A small class raster written whole (the hostile cases)."""
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(
        driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1, dtype="uint8",
        crs="EPSG:32633", transform=from_origin(500_000.0, 5_000_000.0, 0.5, 0.5), tiled=True,
        blockxsize=256, blockysize=256, compress="deflate", nodata=255,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(bicorseg_classes=json.dumps(NAMES))
        dst.write(classes, 1)


def speckled() -> np.ndarray:
    """1000 x 1200: one class on the left with a one-pixel hole of another every 3 rows and 2 columns."""
    classes = np.full((1000, 1200), FIELD, np.uint8)
    classes[:, 600:] = TREE
    classes[1:999:3, 1:599:2] = WATER
    return classes


def checkers(size: int, square: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.where((y // square + x // square) % 2, FIELD, TREE).astype(np.uint8)


def run_vectorize(raster: Path, output: Path, window: int, extra: list[str]) -> dict:
    argv = [
        "vectorize",
        str(raster),
        "--output",
        str(output),
        "--window",
        str(window),
        "--overwrite",
        "--quiet",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv, *extra], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if not lines:
        raise SystemExit(f"vectorize failed on {raster}:\n{proc.stderr}")
    result = json.loads(lines[-1][6:])
    result["process_seconds"] = wall
    result["message"] = proc.stderr.strip().splitlines()[-1] if result["code"] else ""
    return result


def coverage_check(output: Path) -> dict:
    """The written polygons as a coverage: GEOS's check (shared edges with the same vertices on both
    sides, no overlaps) and the area covered twice. (Its check of narrow gaps would also flag the
    tip of the nodata corner, which is no gap between polygons.)"""
    import pyogrio
    import shapely

    geoms = shapely.from_wkb(pyogrio.raw.read(output, columns=[])[2])
    faulty = ~shapely.is_empty(shapely.coverage_invalid_edges(geoms))
    overlap = float(shapely.area(geoms).sum() - shapely.union_all(geoms).area)
    return {"coverage_valid": bool(shapely.coverage_is_valid(geoms)),
            "polygons_with_invalid_edges": int(faulty.sum()), "overlap_m2": round(overlap, 6)}  # fmt: skip


def row_of(case: str, raster: Path, output: Path, result: dict, megapixels: float, **more) -> dict:
    import pyogrio

    features = pyogrio.read_info(output)["features"] if result["code"] == 0 else 0
    row = {
        "case": case,
        "megapixels": round(megapixels, 2),
        "exit_code": result["code"],
        "features": features,
        "seconds": round(result["seconds"], 2),
        "cpu_seconds": round(result["cpu_seconds"], 2),
        "process_seconds": round(result["process_seconds"], 2),
        "baseline_rss_mib": round(result["baseline_rss_bytes"] / 2**20, 1),
        "peak_rss_mib": round(result["peak_rss_bytes"] / 2**20, 1),
        "peak_above_start_mib": round((result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / 2**20, 1),
        **more,
    }
    if result["code"]:
        row["message"] = result["message"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 12288])
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--no-hostile", action="store_true", help="only the procedural rasters")
    parser.add_argument("--workdir", default=None, help="where the rasters go (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import pyogrio
    import rasterio
    import shapely

    from bicorseg import __version__

    load_at_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        for size in args.sizes:
            raster, output = work / f"classes_{size}.tif", work / f"polygons_{size}.gpkg"
            start = time.perf_counter()
            write_classes(raster, size)
            print(f"wrote {raster.name} ({size} x {size}) in {time.perf_counter() - start:.0f} s", flush=True)
            result = run_vectorize(raster, output, args.window, [])
            more = {"size": size, "output_mib": round(output.stat().st_size / 2**20, 1)}
            if size <= 4096:
                more.update(coverage_check(output))
            rows.append(row_of(f"procedural {size} px", raster, output, result, size * size / 1e6, **more))
            raster.unlink()
            output.unlink()
        if not args.no_hostile:
            hostile = [
                ("speckled", speckled(), []),
                ("speckled, --min-area 1", speckled(), ["--min-area", "1"]),
                ("checkerboard 1 px", checkers(2048, 1), []),
                ("checkerboard 4 px, --max-polygons 300000", checkers(2048, 4), ["--max-polygons", "300000"]),
            ]
            for case, classes, extra in hostile:
                raster, output = work / "hostile.tif", work / "hostile.gpkg"
                write_array(raster, classes)
                result = run_vectorize(raster, output, args.window, extra)
                rows.append(row_of(case, raster, output, result, classes.size / 1e6))
                output.unlink(missing_ok=True)
    report = {
        "benchmark": "bicorseg vectorize on uint8 class GeoTIFFs (EPSG:32633, 0.5 m), to GeoPackage",
        "command": "python benchmarks/vectorize.py " + " ".join(sys.argv[1:]),
        "settings": {"window": args.window, "simplify": "default (1.5 pixels)", "format": "gpkg"},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "rasterio": rasterio.__version__,
            "gdal_rasterio": rasterio.__gdal_version__,
            "gdal_pyogrio": pyogrio.__gdal_version_string__,
            "shapely": shapely.__version__,
            "geos": shapely.geos_version_string,
        },
        "bicorseg": __version__,
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"{'case':<42} {'MPix':>6} {'exit':>4} {'polygons':>9} {'time (s)':>9} {'CPU (s)':>8} {'start RSS':>10} "
        f"{'peak RSS (MiB)':>15}"
    )
    for row in rows:
        print(
            f"{row['case']:<42} {row['megapixels']:>6.1f} {row['exit_code']:>4} {row['features']:>9} "
            f"{row['seconds']:>9.1f} {row['cpu_seconds']:>8.1f} {row['baseline_rss_mib']:>10.0f} "
            f"{row['peak_rss_mib']:>15.0f}"
        )
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
