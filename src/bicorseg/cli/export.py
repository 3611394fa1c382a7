"""``bicorseg export``: a checkpoint as an ONNX graph at a fixed tile size, checked with onnxruntime, or
as a pretrained folder to share (safetensors weights, configuration, class table, model card)."""

from __future__ import annotations

import argparse

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import TILING, add_shared_options, checkpoint_tiling
from bicorseg.defaults import STRIDE
from bicorseg.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (checked against onnxruntime) or as a pretrained folder to share",
        description=(
            "Export a checkpoint to FORMAT (onnx): input 'image' B x bands x TILE x TILE (normalised), output "
            "'logits' B x N x TILE x TILE, dynamic batch. The checkpoint's metadata (classes, palette, "
            "normalisation, tile) is stored in the file, so 'bicorseg predict --checkpoint "
            "model.onnx' needs nothing else. The export fails if onnxruntime and PyTorch differ by more than 1e-4. "
            "--profile deepness writes a file for the QGIS plugin Deepness (softmax output and its metadata). "
            "pretrained: a folder OUTPUT as timm and the Hugging Face Hub share models: model.safetensors, "
            "config.json, classes.yaml and a README.md model card (classes and colours, bands and statistics, "
            "training recipe, --evaluation scores with their convention, --licence); 'predict --checkpoint "
            "OUTPUT' and BiCoRSeg.from_pretrained read it, --push-to-hub uploads it (extra hub)."
        ),
    )
    parser.add_argument("format", choices=("onnx", "pretrained"), help="export format")
    add_shared_options(parser, "checkpoint")
    parser.add_argument("--output", required=True, help="file to write (model.onnx) or folder (pretrained)")
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
    parser.add_argument(
        "--evaluation",
        metavar="JSON",
        help="pretrained: the report of 'bicorseg evaluate --output', for the card",
    )
    parser.add_argument(
        "--licence", metavar="ID", help="pretrained: the licence the card declares, e.g. cc-by-4.0"
    )
    parser.add_argument(
        "--push-to-hub", metavar="ORG/NAME", help="pretrained: then upload the folder to this Hub repository"
    )
    parser.add_argument("--private", action="store_true", help="--push-to-hub: create the repository private")
    add_shared_options(
        parser, "overwrite", overwrite="replace an existing output file (or pretrained folder)"
    )
    parser.set_defaults(func=run, parameter_options={"repo_id": "--push-to-hub", "licence": "--licence"})


def run(args: argparse.Namespace) -> int:
    shared = [f for f, v in (("--evaluation", args.evaluation), ("--licence", args.licence),
                             ("--push-to-hub", args.push_to_hub), ("--private", args.private)) if v]  # fmt: skip
    if args.format == "pretrained":
        return _pretrained(args)
    if shared:
        raise ConfigError(f"{shared[0]} is an option of export pretrained, not of export onnx")
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


def _pretrained(args: argparse.Namespace) -> int:
    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.models import BiCoRSeg
    from bicorseg.models.hub import check_repo_id, push_to_hub

    if args.private and not args.push_to_hub:
        raise ConfigError("--private is for --push-to-hub: give the repository too")
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)  # before anything is written
    ensure_writable(args.output, folder=True)
    checkpoint = load_checkpoint(args.checkpoint)
    folder = checkpoint.build_model().save_pretrained(
        args.output,
        tiling=checkpoint.tiling,
        card=checkpoint.extra,
        licence=args.licence,
        evaluation=args.evaluation,
        repo_id=args.push_to_hub,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {folder}: model.safetensors, config.json, README.md"
        + (", classes.yaml" if (folder / "classes.yaml").is_file() else "")
    )
    if args.push_to_hub:
        print(
            f"uploaded to {push_to_hub(folder, args.push_to_hub, network=BiCoRSeg, private=args.private or None)}"
        )
    return 0
