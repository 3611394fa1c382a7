"""Benchmark of ``bicorseg vectorize`` on large procedural class rasters: wall time and peak resident memory.

Writes uint8 class GeoTIFFs of 2048 and 12288 px squared (EPSG:32633, 0.5 m pixels, tiled, deflate,
nodata 255, the demo's six classes in the tags), generated window by window: land parcels (field,
bare ground, trees) on a jittered grid, smooth forest patches, a meandering river and lakes, a road
grid with diagonals, blocks of buildings in urban parcels, a nodata corner. Each raster is then
vectorised to GeoPackage by ``bicorseg vectorize`` (default simplification, 2048 px windows) in a
fresh process, which reports its resident set after start-up (torch and the CLI imported) and its
peak (``VmHWM``, Linux). Results go to ``benchmarks/results/vectorize.json`` and a table is printed.

    python benchmarks/vectorize.py                      # 2048 and 12288
    python benchmarks/vectorize.py --sizes 4096         # others
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
# ru_maxrss, which Linux carries over fork + exec from the parent that wrote the raster).
CHILD = """
import json, sys, time
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
from bicorseg.cli.main import main
import bicorseg.gis.polygons
baseline = status("VmRSS:")
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
print("BENCH " + json.dumps({"code": code, "seconds": seconds, "baseline_rss_bytes": baseline,
                             "peak_rss_bytes": status("VmHWM:")}))
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


def run_vectorize(raster: Path, output: Path, window: int) -> dict:
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
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"vectorize failed on {raster}:\n{proc.stderr}")
    result = json.loads(lines[-1][6:])
    result["process_seconds"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 12288])
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--workdir", default=None, help="where the rasters go (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import pyogrio
    import rasterio
    import shapely

    from bicorseg import __version__

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        for size in args.sizes:
            raster, output = work / f"classes_{size}.tif", work / f"polygons_{size}.gpkg"
            start = time.perf_counter()
            write_classes(raster, size)
            print(f"wrote {raster.name} ({size} x {size}) in {time.perf_counter() - start:.0f} s", flush=True)
            result = run_vectorize(raster, output, args.window)
            features = pyogrio.read_info(output)["features"]
            megapixels = size * size / 1e6
            rows.append(
                {
                    "size": size,
                    "megapixels": round(megapixels, 2),
                    "features": features,
                    "seconds": round(result["seconds"], 2),
                    "process_seconds": round(result["process_seconds"], 2),
                    "megapixels_per_second": round(megapixels / result["seconds"], 3),
                    "baseline_rss_mib": round(result["baseline_rss_bytes"] / 2**20, 1),
                    "peak_rss_mib": round(result["peak_rss_bytes"] / 2**20, 1),
                    "output_mib": round(output.stat().st_size / 2**20, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            raster.unlink()
            output.unlink()
    base = rows[0]["peak_rss_mib"]
    for row in rows:
        row["peak_rss_vs_first"] = round(row["peak_rss_mib"] / base, 3)
    report = {
        "benchmark": "bicorseg vectorize on procedural uint8 class GeoTIFFs (EPSG:32633, 0.5 m), to GeoPackage",
        "command": "python benchmarks/vectorize.py " + " ".join(sys.argv[1:]),
        "settings": {"window": args.window, "simplify": "default (1.5 pixels)", "format": "gpkg"},
        "machine": {
            "cpus": os.cpu_count(),
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
        f"{'size (px)':>10} {'MPix':>7} {'polygons':>9} {'time (s)':>9} {'MPix/s':>7} "
        f"{'start RSS':>10} {'peak RSS (MiB)':>15} {'vs first':>9}"
    )
    for row in rows:
        print(
            f"{row['size']:>10} {row['megapixels']:>7.1f} {row['features']:>9} {row['seconds']:>9.1f} "
            f"{row['megapixels_per_second']:>7.2f} {row['baseline_rss_mib']:>10.0f} {row['peak_rss_mib']:>15.0f} "
            f"{row['peak_rss_vs_first']:>9.2f}"
        )
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
