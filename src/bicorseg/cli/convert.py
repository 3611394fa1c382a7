"""``bicorseg convert``: a checkpoint of the original BiCoR-Seg code -> a bicorseg checkpoint."""

from __future__ import annotations

import argparse

from bicorseg.checkpoint import convert_official_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint of the original BiCoR-Seg implementation",
        description=(
            "Read a checkpoint of the original public BiCoR-Seg code (Lightning checkpoint with 'net.' keys "
            "or a bare state dict) and write a self-describing bicorseg checkpoint. The original does not "
            "store its hyper-parameters, so give the ones it was trained with."
        ),
    )
    parser.add_argument("source", help="checkpoint of the original implementation")
    parser.add_argument("--output", required=True, help="bicorseg checkpoint to write")
    parser.add_argument("--num-classes", type=int, required=True, help="number of classes it was trained for")
    parser.add_argument("--layers", type=int, default=None, help="HBIS layers (checked against the weights)")
    parser.add_argument("--topk-ratio", type=float, default=1.0, help="F2CE top-k ratio (LoveDA: 0.02)")
    parser.add_argument("--min-pixels", type=int, default=64, help="F2CE minimum number of pixels")
    parser.add_argument(
        "--dataset",
        default=None,
        help="attach the facts of a known dataset (vaihingen, potsdam, loveda): classes, palette, bands",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = None
    if args.dataset:
        from bicorseg.data import get_spec

        dataset = get_spec(args.dataset)
    checkpoint = convert_official_file(
        args.source,
        args.output,
        num_classes=args.num_classes,
        layers=args.layers,
        topk_ratio=args.topk_ratio,
        min_pixels=args.min_pixels,
        dataset=dataset,
    )
    config = checkpoint.model_config
    print(
        f"wrote {args.output}: {config.backbone}, {config.num_classes} classes, {config.layers} HBIS layers, "
        f"width {config.width}, {config.in_channels} bands"
    )
    return 0
