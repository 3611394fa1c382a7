"""Benchmark of the GIS training source: chips per second and peak memory of the on-the-fly sampler,
against rasterising the whole label layer once.

Writes a procedural 3-band uint8 raster (EPSG:32633, 50 cm pixels, tiled, written in strips) and a
GeoPackage of random polygons in EPSG:4326 (so every read reprojects): 8-gons and rotated rectangles
of 2 to 16 m, six classes, about 100,000 for 8192 x 8192 px (the same density for other sizes; some
overlap). Then, each in a fresh process that reports its own peak resident set (``VmHWM``, Linux):

* **sampler**: :class:`bicorseg.data.geo.GeoSource` and :class:`~bicorseg.data.geo.GeoSplit` as a
  ``geo`` training run builds them (the polygons indexed into a FlatGeobuf, the census of labelled
  pixels, validation blocks of 1024 px holding 20 %), then ``--chips`` training chips read and
  labelled (windows of 352 px: the 256 px crop at the smallest rescale of the augmentation), one
  process, one thread;
* **whole layer**: every polygon read, reprojected and burned into one label array of the raster's
  size with ``rasterio.features.rasterize`` (what a pipeline that rasterises the layer once holds);
  chips would then be slices of it.

Results go to ``benchmarks/results/geo.json``; a table is printed.

    python benchmarks/geo.py                      # 8192 px, ~100,000 polygons
    python benchmarks/geo.py --sizes 4096 8192 --chips 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe as describe_machine

RESULTS = Path(__file__).resolve().parent / "results" / "geo.json"
POLYGONS_PER_PIXEL = 100_000 / 8192**2
CROP = 256
ORIGIN = (500_000.0, 5_000_000.0)
PIXEL = 0.5


def write_raster(path: Path, size: int, seed: int = 0) -> None:
    """A textured 3-band scene, written in strips of 256 rows (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(*ORIGIN, PIXEL, PIXEL),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    x = np.arange(size, dtype=np.float32)
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 256):
            h = min(256, size - y0)
            y = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
            base = 128 + 60 * np.sin(x / 97.0) * np.cos(y / 61.0) + 30 * np.sin((x + y) / 17.0)
            noise = rng.normal(0, 8, (h, size)).astype(np.float32)
            block = np.stack([base + noise, base[::-1] * 0.8 + 20 + noise, 255 - base + noise])
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=rasterio.windows.Window(0, y0, size, h))


def write_polygons(path: Path, size: int, seed: int = 0) -> int:
    """Random 8-gons and rotated rectangles over the raster, as a GeoPackage in EPSG:4326."""
    import pyarrow as pa
    import pyogrio
    import shapely
    from pyproj import Transformer

    rng = np.random.default_rng(seed)
    count = round(POLYGONS_PER_PIXEL * size * size)
    side = size * PIXEL
    x = ORIGIN[0] + rng.uniform(0, side, count)
    y = ORIGIN[1] - rng.uniform(0, side, count)
    radius = rng.uniform(1.0, 8.0, count)
    round_ones = rng.random(count) < 0.5
    geoms = np.empty(count, object)
    geoms[round_ones] = shapely.buffer(
        shapely.points(x[round_ones], y[round_ones]), radius[round_ones], quad_segs=2
    )
    boxes = shapely.box(x - radius, y - radius * 0.6, x + radius, y + radius * 0.6)[~round_ones]
    angles = rng.uniform(0, 180, count)[~round_ones]
    geoms[~round_ones] = [shapely.affinity.rotate(b, a) for b, a in zip(boxes, angles)]
    move = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    geoms = shapely.transform(geoms, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])))
    names = np.array(["bare ground", "field", "tree", "water", "road", "building"])
    table = pa.table({"geometry": shapely.to_wkb(geoms), "class": names[rng.integers(0, 6, count)]})
    pyogrio.write_arrow(
        table,
        path,
        layer="labels",
        driver="GPKG",
        geometry_name="geometry",
        geometry_type="Polygon",
        crs="EPSG:4326",
    )
    return count


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


def _peak() -> int:
    return _status("VmHWM")


def child_sampler(raster: str, labels: str, chips: int) -> dict:
    import torch

    from bicorseg.data.geo import GeoSource, GeoSplit, training_window

    torch.set_num_threads(1)
    imported = _status("VmRSS")  # torch, GDAL, PROJ... loaded: what the data adds comes on top
    start = time.perf_counter()
    source = GeoSource([raster], labels, label_field="class")
    indexed = time.perf_counter()
    window = training_window(CROP, (0.75, 1.0, 1.25, 1.5))
    split = GeoSplit(source, window, CROP, val_block=1024, val_fraction=0.2)
    ready = time.perf_counter()
    rng = np.random.default_rng(0)
    draws = [split.training.draw(rng.random(3)) for _ in range(chips)]
    start_chips = time.perf_counter()
    labelled = 0
    for index, win in draws:
        _, labels_ = source.read(index, win)
        labelled += int((labels_ != source.ignore_index).sum())
    done = time.perf_counter()
    burn_start = time.perf_counter()
    for index, win in draws:
        source.labels_for(index, win)
    burn_done = time.perf_counter()
    result = {
        "index_seconds": indexed - start,
        "census_split_seconds": ready - indexed,
        "window_px": window,
        "chips": chips,
        "chips_per_second": chips / (done - start_chips),
        "labels_only_per_second": chips / (burn_done - burn_start),
        "labelled_share": labelled / (chips * window * window),
        "training_pixels": int(split.zones.counts[0].sum()),
        "validation_pixels": int(split.zones.counts[1].sum()),
        "conflict_pixels": int(split.conflicts),
        "rss_after_imports_bytes": imported,
        "peak_rss_bytes": _peak(),
    }
    source.close()
    return result


def child_whole(raster: str, labels: str) -> dict:
    import pyogrio
    import rasterio
    import shapely
    from pyproj import Transformer
    from rasterio.features import rasterize

    imported = _status("VmRSS")
    start = time.perf_counter()
    with rasterio.open(raster) as src:
        shape, transform = (src.height, src.width), src.transform
    _, _, wkb, fields = pyogrio.raw.read(labels, columns=["class"])
    geoms = shapely.from_wkb(wkb)
    move = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    geoms = shapely.transform(geoms, lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])))
    codes = {name: i for i, name in enumerate(sorted(set(fields[0].tolist())))}
    values = [codes[v] for v in fields[0]]
    array = rasterize(zip(geoms, values), out_shape=shape, transform=transform, fill=255, dtype="uint8")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "labelled_share": float((array != 255).mean()),
        "rss_after_imports_bytes": imported,
        "peak_rss_bytes": _peak(),
    }


def _mib(result: dict) -> str:
    peak, base = result["peak_rss_bytes"] / 2**20, result["rss_after_imports_bytes"] / 2**20
    return f"{peak:.0f} MiB ({peak - base:+.0f})"


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    return json.loads(line.removeprefix("BENCH "))


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192])
    parser.add_argument("--chips", type=int, default=300)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_sampler(rest[0], rest[1], int(rest[2])) if kind == "sampler" else child_whole(*rest)
        print("BENCH " + json.dumps(result))
        return
    machine = describe_machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bicorseg-geo-bench-") as folder:
        for size in args.sizes:
            raster, labels = Path(folder) / f"scene_{size}.tif", Path(folder) / f"labels_{size}.gpkg"
            write_raster(raster, size)
            polygons = write_polygons(labels, size)
            sampler = run_child("sampler", str(raster), str(labels), str(args.chips))
            whole = run_child("whole", str(raster), str(labels))
            rows.append({"size": size, "polygons": polygons, "sampler": sampler, "whole_layer": whole})
            print(f"{size} px, {polygons} polygons: done", file=sys.stderr)
    machine["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine, "crop": CROP, "results": rows}, indent=2) + "\n")
    print(
        "| raster | polygons | sampler: index + census + split | chips/s (image + labels) | labels only/s | "
        "peak RSS (above imports) | whole layer: rasterise once | peak RSS (above imports) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        s, w = row["sampler"], row["whole_layer"]
        print(
            f"| {row['size']} px | {row['polygons']:,} | {s['index_seconds']:.1f} s + {s['census_split_seconds']:.1f} s "
            f"| {s['chips_per_second']:.1f} | {s['labels_only_per_second']:.1f} | {_mib(s)} | {w['seconds']:.1f} s "
            f"| {_mib(w)} |"
        )
    print(
        f"wrote {RESULTS}; load average {machine['load_average_at_start']} -> {machine['load_average_at_end']}"
    )


if __name__ == "__main__":
    main()
