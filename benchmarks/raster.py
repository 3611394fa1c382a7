"""Benchmark of ``bicorseg predict`` on large synthetic GeoTIFFs (time, peak memory), and of tiling
honesty: how much a BiCoR-Seg prediction depends on the tiles it was made in.

**Memory.** Writes 3-band uint8 GeoTIFFs of 2048, 6144 and 12288 px squared (EPSG:32633, 25 cm
pixels, tiled), saves a small random-weight BiCoR-Seg (ConvNeXt-nano backbone, C = 32, 6 classes),
and runs ``bicorseg predict`` on each raster in a fresh process, which reports its own peak
resident set size (``VmHWM``, Linux). Results go to ``benchmarks/results/raster.json``.

**Tile consistency** (``--consistency DEMO_DIR``, a folder written by ``bicorseg demo``, whose
``model.ckpt`` is a trained demo model): labelled held-out demo scenes (procedural, seeds the demo
never trains on) are predicted for each tile size and overlap, once with the tile grid at the
scene's origin and once with the grid moved by half a tile (the scene cropped by half a tile at
the top and left); the figure is the share of pixels where both tilings give the same class, the
agreement with one tile over the whole scene, and the mIoU against the labels. The same is done
for the scene-consistent mode under trial (``scene_pooled``: each HBIS layer's class embeddings
pooled over every tile of the scene instead of over each tile). Results go to
``benchmarks/results/tiling.json``.

    python benchmarks/raster.py                                # the three sizes
    python benchmarks/raster.py --sizes 2048 4096              # others
    bicorseg demo --steps 300 --output /tmp/d && python benchmarks/raster.py --sizes --consistency /tmp/d
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe as describe_machine

RESULTS = Path(__file__).resolve().parent / "results" / "raster.json"
TILING_RESULTS = Path(__file__).resolve().parent / "results" / "tiling.json"
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
    argv += ["--device", args.device, "--precision", args.precision, "--overwrite"]
    if args.block is not None:
        argv += ["--block", str(args.block)]
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
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 6144, 12288])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="predict --precision (default fp32)")
    parser.add_argument("--block", type=int, default=None, help="predict --block (default: predict's)")
    parser.add_argument("--consistency", metavar="DEMO_DIR", default=None, help="also the tiling figure")
    parser.add_argument("--scenes", type=int, default=4, help="held-out scenes for the tiling figure")
    parser.add_argument("--scene-size", type=int, default=1024)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 384, 512, 768])
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--workdir", default=None, help="where the rasters go (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import rasterio

    from bicorseg import __version__

    if args.consistency is not None:
        tiling_report(args)
    if not args.sizes:
        return
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
                assert out.overviews(1), "the class raster is a COG with overviews"
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
            for written in (work / "out").iterdir():
                written.unlink()
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
            "precision": args.precision,
            "block": args.block or "predict's default",
            "outputs": "class raster (Cloud-Optimized GeoTIFF with overviews) and its QGIS style",
        },
        "device": args.device,
        "machine": describe_machine(),
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


# --- tiling honesty ------------------------------------------------------------------------------


def scene_pooled_probabilities(model, image, tile: int, overlap: float):
    """Class probabilities (N x H x W) with every HBIS layer's class embeddings pooled over all the
    tiles of the scene (the scene-consistent mode under trial; top-k ratio 1 models only).

    Layer by layer: each tile's sigmoid heatmaps weight its normalised features, the weighted sums
    of every tile (each pixel weighted by its share of the blending window, so that each pixel of
    the scene counts once) give one context per class, hence one set of class embeddings for the
    scene; each tile's features are then refined with them (CE2F), as in the model. The heads'
    outputs are blended like ``predict_array``'s.
    """
    import torch
    import torch.nn.functional as F

    from bicorseg.inference.tiling import TileGrid, blend_weights

    _, height, width = image.shape
    grid = TileGrid(height, width, tile, overlap, multiple=32)
    tiles = list(grid)
    if any(t.height % 32 or t.width % 32 for t in tiles) or any(
        layer.selection.ratio < 1 for layer in model.layers
    ):
        raise SystemExit("scene pooling here needs tiles that are multiples of 32 and a top-k ratio of 1")
    x = torch.from_numpy(image)
    with torch.inference_mode():
        feats = []
        coverage = torch.zeros(height // 4, width // 4)
        for t in tiles:
            crop = x[:, t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width][None]
            f0 = model.neck(model.backbone(crop), (t.height // 4, t.width // 4))
            feats.append(f0.permute(0, 2, 3, 1).contiguous())
            coverage[t.y0 // 4 : (t.y0 + t.height) // 4, t.x0 // 4 : (t.x0 + t.width) // 4] += (
                torch.from_numpy(blend_weights(t.height // 4, t.width // 4))
            )
        shares = [
            torch.from_numpy(blend_weights(t.height // 4, t.width // 4))
            / coverage[t.y0 // 4 : (t.y0 + t.height) // 4, t.x0 // 4 : (t.x0 + t.width) // 4]
            for t in tiles
        ]
        ce = model.class_embed.unsqueeze(0)
        for layer in model.layers:
            total = torch.zeros(ce.shape[1], ce.shape[2])
            mass = torch.zeros(ce.shape[1], 1)
            scores_of = []
            for f, share in zip(feats, shares):
                normed, scores = layer.scores(ce, f)
                heat = torch.sigmoid(scores)[0] * share.reshape(1, -1)  # N x P
                total += heat @ normed[0]
                mass += heat.sum(dim=1, keepdim=True)
                scores_of.append(scores)
            context = F.linear((total / (mass + 1e-6))[None], layer.value.weight.flatten(1))
            gate = torch.sigmoid(layer.gate(torch.cat([layer.class_norm(ce), context], dim=-1)))
            ce_new = gate * layer.candidate(context) + (1 - gate) * ce
            feats = [layer.feature_update(f, ce_new, s) for f, s in zip(feats, scores_of)]
            ce = ce_new
        out = torch.zeros(model.num_classes, height, width)
        weight = torch.zeros(height, width)
        kernels = model.classifier(ce)
        for t, f in zip(tiles, feats):
            probs = torch.softmax(model._head(kernels, f)[0], dim=0)
            w = torch.from_numpy(blend_weights(t.height, t.width))
            out[:, t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width] += probs * w
            weight[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width] += w
    return (out / weight).numpy()


def tiling_report(args: argparse.Namespace) -> None:
    import torch

    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.demo.scenes import DEMO_DATASET, generate_scene
    from bicorseg.inference import predict_array
    from bicorseg.metrics import ConfusionMatrix, scores_from_confusion

    checkpoint = load_checkpoint(Path(args.consistency) / "model.ckpt")
    model = checkpoint.build_model().eval()
    mean = np.asarray(DEMO_DATASET.mean, np.float32)[:, None, None]
    std = np.asarray(DEMO_DATASET.std, np.float32)[:, None, None]
    seeds = [1_000_003 + k for k in range(args.scenes)]  # the demo trains on multiples of 7919
    scenes = []
    for seed in seeds:
        image, truth = generate_scene(args.scene_size, seed)
        scenes.append((((image.astype(np.float32) - mean) / std).astype(np.float32), truth))

    def predict(mode: str, image: np.ndarray, tile: int, overlap: float) -> np.ndarray:
        if mode == "scene_pooled":
            return scene_pooled_probabilities(model, image, tile, overlap).argmax(0)
        return predict_array(model, image, tile=tile, overlap=overlap, batch_size=2).argmax(0)

    whole = [predict("tiles", image, args.scene_size, 0.0) for image, _ in scenes]
    rows = []
    for mode in ("tiles", "scene_pooled"):
        for tile in args.tiles:
            for overlap in args.overlaps:
                start = time.perf_counter()
                same = total = same_whole = 0
                matrix = ConfusionMatrix(DEMO_DATASET.num_classes, DEMO_DATASET.ignore_index)
                for (image, truth), single in zip(scenes, whole):
                    a = predict(mode, image, tile, overlap)
                    half = tile // 2
                    b = predict(mode, image[:, half:, half:], tile, overlap)
                    same += int((a[half:, half:] == b).sum())
                    total += b.size
                    same_whole += int((a == single).sum())
                    matrix.update(
                        torch.from_numpy(a.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
                    )
                scores = scores_from_confusion(matrix.compute(), DEMO_DATASET.eval_classes)
                rows.append(
                    {
                        "mode": mode,
                        "tile": tile,
                        "overlap": overlap,
                        "agreement_half_tile_shift_pct": round(100 * same / total, 2),
                        "agreement_with_one_tile_pct": round(
                            100 * same_whole / (len(scenes) * args.scene_size**2), 2
                        ),
                        "miou_pct": round(100 * scores.miou, 2),
                        "oa_pct": round(100 * scores.oa, 2),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    one_tile = ConfusionMatrix(DEMO_DATASET.num_classes, DEMO_DATASET.ignore_index)
    for single, (_, truth) in zip(whole, scenes):
        one_tile.update(torch.from_numpy(single.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)))
    report = {
        "benchmark": "tile consistency of BiCoR-Seg predictions on labelled held-out demo scenes",
        "command": "python benchmarks/raster.py " + " ".join(sys.argv[1:]),
        "model": f"the demo model in {args.consistency} ({checkpoint.extra.get('demo', {})}), "
        f"trained on {checkpoint.tiling.tile} px crops",
        "scenes": {"count": len(scenes), "size": args.scene_size, "seeds": seeds},
        "one_tile_over_the_scene": {
            "miou_pct": round(
                100 * scores_from_confusion(one_tile.compute(), DEMO_DATASET.eval_classes).miou, 2
            )
        },
        "results": rows,
    }
    TILING_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    TILING_RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {TILING_RESULTS}")


if __name__ == "__main__":
    main()
