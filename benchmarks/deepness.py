"""What the QGIS plugin Deepness computes with a model exported by ``bicorseg export onnx --profile deepness``,
next to what ``bicorseg predict`` computes with the checkpoint.

Deepness's processing of an entire layer is re-implemented from its source
(``deepness/processing/extent_utils.py``, ``tile_params.py``, ``map_processor.py`` and
``map_processor_segmentation.py``; the preprocessing and segmentation steps as
``tests/inference/test_deepness.py`` reads them): the layer's extent is grown on the right and at
the top to ``N * stride + tile`` pixels (``stride = tile - overlap``, the overlap
``int(tile * percent / 100 * 2) // 2`` pixels; pixels beyond the raster are 0), tiles are taken in
rows from the top-left, each tile's class map (argmax of the model's probabilities, no threshold)
is copied without its outer half-overlap (edge tiles up to the edge), with no blending, and the
result is cut back to the raster.

Measured, at fp32 on the CPU: per tile, the pixels where the ONNX file's argmax differs from
PyTorch's argmax of the same normalised tile; over the raster, the share of pixels where Deepness's
stitched map equals ``predict``'s (same tile and overlap, the same checkpoint). Results go to
``benchmarks/results/deepness.json``.

    bicorseg demo --output demo_output
    python benchmarks/deepness.py --checkpoint demo_output/model.ckpt --image demo_output/scene.tif \\
        --resolution 50
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "deepness.json"


def deepness_grid(
    height: int, width: int, tile: int, overlap: int
) -> tuple[int, int, int, list[tuple[int, int]]]:
    """(rows added at the top, full height, full width, tile origins (row, col) in the grown image)."""
    stride = tile - overlap

    def grown(size: int) -> int:
        if size <= tile:
            return tile
        return size + (stride - (size - tile) % stride) % stride

    full_h, full_w = grown(height), grown(width)
    rows = round((full_h - tile) / stride) + 1
    cols = round((full_w - tile) / stride) + 1
    return (
        full_h - height,
        full_h,
        full_w,
        [(r * stride, c * stride) for r in range(rows) for c in range(cols)],
    )


def copy_slice(index: int, count: int, start: int, tile: int, overlap: int) -> tuple[int, int]:
    """``TileParams.get_slice_on_full_image_for_copying`` along one axis: [low, high) in the grown image."""
    half = overlap // 2
    low, high = start + half, start + tile - half
    if index == 0:
        low -= half
    if index == count - 1:
        high += half
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True, help="an RGB GeoTIFF the checkpoint was made for")
    parser.add_argument("--resolution", type=float, required=True, help="cm per pixel (the image's)")
    parser.add_argument("--tile", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--overlap", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import onnxruntime as ort
    import rasterio
    import torch

    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.cli.main import main as bicorseg

    torch.set_num_threads(1)
    loaded = load_checkpoint(args.checkpoint)
    tile = args.tile or loaded.tiling.tile
    overlap_fraction = loaded.tiling.overlap if args.overlap is None else args.overlap
    model = loaded.build_model().eval()
    spec = model.dataset
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        onnx_file, out = work / "model.onnx", work / "predicted"
        common = ["--checkpoint", args.checkpoint, "--tile", str(tile), "--overlap", str(overlap_fraction)]
        assert bicorseg(["export", "onnx", *common, "--profile", "deepness", "--resolution",
                         f"{args.resolution:g}", "--output", str(onnx_file)]) == 0  # fmt: skip
        assert (
            bicorseg(["predict", args.image, *common, "--precision", "fp32", "--output", str(out), "--quiet"])
            == 0
        )
        with rasterio.open(out / f"{Path(args.image).stem}.tif") as src:
            predicted = src.read(1)
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        mean = np.float32(json.loads(meta["standardization_mean"]))
        std = np.float32(json.loads(meta["standardization_std"]))
        percent = float(json.loads(meta["tiles_overlap"]))
        input_name = session.get_inputs()[0].name

        with rasterio.open(args.image) as src:
            image = src.read()  # bands x H x W, uint8
        height, width = image.shape[1:]
        overlap = int(tile * percent / 100 * 2) // 2
        top, full_h, full_w, origins = deepness_grid(height, width, tile, overlap)
        grown = np.zeros((image.shape[0], full_h, full_w), np.uint8)
        grown[:, top:, :width] = image
        stitched = np.zeros((full_h, full_w), np.int64)
        rows = sorted({r for r, _ in origins})
        cols = sorted({c for _, c in origins})
        tile_differences, tiles = [], 0
        for r, c in origins:
            pixels = grown[:, r : r + tile, c : c + tile]
            batch = np.float32(pixels.transpose(1, 2, 0)[None] / 255.0)
            batch = np.transpose((batch - mean) / std, (0, 3, 1, 2))
            (probabilities,) = session.run(None, {input_name: batch})
            classes = probabilities[0].argmax(axis=0)
            normalised = (pixels.astype(np.float32) - np.float32(spec.mean)[:, None, None]) / np.float32(
                spec.std
            )[:, None, None]
            with torch.inference_mode():
                reference = model(torch.from_numpy(normalised[None]))[0].argmax(dim=0).numpy()
            tile_differences.append(int((classes != reference).sum()))
            tiles += 1
            y0, y1 = copy_slice(rows.index(r), len(rows), r, tile, overlap)
            x0, x1 = copy_slice(cols.index(c), len(cols), c, tile, overlap)
            stitched[y0:y1, x0:x1] = classes[y0 - r : y1 - r, x0 - c : x1 - c]
        deepness = stitched[top:, :width]
        agree = float((deepness == predicted).mean())
    report = {
        "benchmark": "Deepness's tiling (re-implemented from its source) against bicorseg predict, fp32, CPU",
        "command": "python benchmarks/deepness.py " + " ".join(sys.argv[1:]),
        "checkpoint": args.checkpoint,
        "image": args.image,
        "size": [height, width],
        "tile": tile,
        "overlap_fraction": overlap_fraction,
        "deepness_overlap_px": overlap,
        "deepness_grid": {"rows_added_at_top": top, "grown": [full_h, full_w], "tiles": tiles},
        "tiles_with_argmax_differences": sum(d > 0 for d in tile_differences),
        "pixels_with_argmax_differences": sum(tile_differences),
        "pixels_per_tile": tile * tile,
        "stitched_agreement": round(agree, 5),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
