"""``bicorseg export``: a checkpoint as an ONNX graph at a fixed tile size, checked with onnxruntime."""

from __future__ import annotations

import argparse

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import TILING, add_shared_options, checkpoint_tiling
from bicorseg.defaults import STRIDE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (checked against onnxruntime)",
        description=(
            "Export a checkpoint to FORMAT (onnx): input 'image' B x bands x TILE x TILE (normalised), output "
            "'logits' B x N x TILE x TILE, dynamic batch. The checkpoint's metadata (classes, palette, "
            "normalisation, tile) is stored in the file, so 'bicorseg predict --checkpoint "
            "model.onnx' needs nothing else. The export fails if onnxruntime and PyTorch differ by more than 1e-4. "
            "--profile deepness writes a file for the QGIS plugin Deepness (softmax output and its metadata)."
        ),
    )
    parser.add_argument("format", choices=("onnx",), help="export format")
    add_shared_options(parser, "checkpoint")
    parser.add_argument("--output", required=True, help="file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument(
        "--profile",
        choices=("bicorseg", "deepness"),
        default="bicorseg",
        help="bicorseg (logits, for predict --engine onnx) or deepness: softmax output 'probabilities' and "
        "the metadata the QGIS plugin Deepness reads (class names, tile size, overlap, resolution, "
        "standardisation); predict --engine onnx reads it too",
    )
    add_shared_options(
        parser,
        *TILING,
        tile=f"the fixed tile size, a multiple of {STRIDE} (default: the checkpoint's, the size it was trained on)",
        overlap="deepness: the tile overlap the plugin starts with, a fraction of the tile (default: the checkpoint's)",
    )
    parser.add_argument(
        "--resolution",
        dest="resolution_cm",
        type=float,
        default=None,
        metavar="CM",
        help="deepness (required): ground resolution the model works at, in cm per pixel (e.g. 9 for "
        "Vaihingen); the plugin resamples the map to it",
    )
    add_shared_options(parser, "overwrite", overwrite="replace an existing output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ensure_writable(args.output, overwrite=args.overwrite)
    from bicorseg.inference.onnx import export_onnx

    tiling = checkpoint_tiling(args.checkpoint, "torch", args.tile, args.overlap)
    difference = export_onnx(
        args.checkpoint,
        args.output,
        tile=tiling.tile,
        opset=args.opset,
        profile=args.profile,
        overlap=tiling.overlap,
        resolution_cm=args.resolution_cm,
    )
    what = "probabilities (deepness)" if args.profile == "deepness" else "logits"
    print(f"wrote {args.output}: tile {tiling.tile}, {what}, max |onnxruntime - PyTorch| = {difference:.2e}")
    return 0
