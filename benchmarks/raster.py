"""Benchmark of ``bicorseg predict`` on large synthetic GeoTIFFs: wall time and peak resident memory.

Writes 3-band uint8 GeoTIFFs of 2048, 6144 and 12288 px squared (EPSG:32633, 25 cm pixels, tiled),
saves a small random-weight BiCoR-Seg (ConvNeXt-nano backbone, C = 32, 6 classes), and runs
``bicorseg predict`` on each raster in a fresh process, which reports its own peak resident set
size (``VmHWM``, Linux). Results go to ``benchmarks/results/raster.json`` and a table is printed.

    python benchmarks/raster.py                      # the three sizes
    python benchmarks/raster.py --sizes 2048 4096    # others
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

RESULTS = Path(__file__).resolve().parent / "results" / "raster.json"
# The child reports VmHWM (the peak resident set of its own address space). Not ru_maxrss: Linux
# carries the parent's peak over fork + exec into the child's ru_maxrss, which would count the
# memory this script used to write the raster.
CHILD = """
import json, sys, time
from bicorseg.cli.main import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print("BENCH " + json.dumps({"code": code, "seconds": seconds, "peak_rss_bytes": peak}))
"""


def write_scene(path: Path, size: int, seed: int = 0) -> None:
    """A synthetic aerial-like scene, written in blocks of rows (never held whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500_000.0, 5_000_000.0, 0.25, 0.25),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        nodata=0,
    )
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 256):
            h = min(256, size - y0)
            y = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
            base = 128 + 60 * np.sin(x / 97.0) * np.cos(y / 61.0) + 30 * np.sin((x + y) / 17.0)
            block = np.stack([base, base[::-1] * 0.8 + 20, 255 - base])
            block += rng.normal(0, 8, block.shape).astype(np.float32)  # float32: small blocks, small parent
            dst.write(np.clip(block, 1, 255).astype(np.uint8), window=Window(0, y0, size, h))


def make_checkpoint(path: Path) -> None:
    import torch

    from bicorseg import BiCoRSeg, DatasetSpec, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_classes=6, backbone="convnext_nano", width=32, layers=2, min_pixels=4)
    spec = DatasetSpec(
        name="synthetic",
        class_names=("impervious", "building", "low_vegetation", "tree", "car", "clutter"),
        palette=((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)),
        ignore_index=255,
        eval_classes=(0, 1, 2, 3, 4),
    )
    save_checkpoint(BiCoRSeg(config, dataset=spec), path)


def run_predict(raster: Path, checkpoint: Path, out_dir: Path, args: argparse.Namespace) -> dict:
    argv = ["predict", str(raster), "--checkpoint", str(checkpoint), "--output", str(out_dir), "--quiet"]
    argv += ["--tile", str(args.tile), "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
    argv += ["--device", args.device, "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"predict failed on {raster}:\n{proc.stderr}")
    result = json.loads(lines[-1][6:])
    result["process_seconds"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 6144, 12288])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None, help="where the rasters go (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import rasterio
    import torch

    from bicorseg import __version__

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        checkpoint = work / "model.ckpt"
        make_checkpoint(checkpoint)
        rows = []
        for size in args.sizes:
            raster = work / f"scene_{size}.tif"
            start = time.perf_counter()
            write_scene(raster, size)
            print(f"wrote {raster.name} ({size} x {size}) in {time.perf_counter() - start:.0f} s", flush=True)
            result = run_predict(raster, checkpoint, work / "out", args)
            with rasterio.open(work / "out" / raster.name) as out:
                assert out.shape == (size, size) and out.crs.to_epsg() == 32633
            megapixels = size * size / 1e6
            rows.append(
                {
                    "size": size,
                    "megapixels": round(megapixels, 2),
                    "seconds": round(result["seconds"], 2),
                    "process_seconds": round(result["process_seconds"], 2),
                    "megapixels_per_second": round(megapixels / result["seconds"], 3),
                    "peak_rss_mib": round(result["peak_rss_bytes"] / 2**20, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            raster.unlink()
            (work / "out" / raster.name).unlink()
    base = rows[0]["peak_rss_mib"]
    for row in rows:
        row["peak_rss_vs_first"] = round(row["peak_rss_mib"] / base, 3)
    report = {
        "benchmark": "bicorseg predict on synthetic 3-band uint8 GeoTIFFs (EPSG:32633)",
        "command": "python benchmarks/raster.py " + " ".join(sys.argv[1:]),
        "model": "BiCoR-Seg, convnext_nano backbone, width 32, 2 HBIS layers, 6 classes, random weights",
        "settings": {
            "tile": args.tile,
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "tta": "none",
        },
        "device": args.device,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
        },
        "bicorseg": __version__,
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(
        f"{'size (px)':>10} {'MPix':>7} {'time (s)':>9} {'MPix/s':>7} {'peak RSS (MiB)':>15} {'vs first':>9}"
    )
    for row in rows:
        print(
            f"{row['size']:>10} {row['megapixels']:>7.1f} {row['seconds']:>9.1f} {row['megapixels_per_second']:>7.2f} "
            f"{row['peak_rss_mib']:>15.0f} {row['peak_rss_vs_first']:>9.2f}"
        )
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
