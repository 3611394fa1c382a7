"""``bicorseg convert``: a checkpoint of the original BiCoR-Seg code -> a bicorseg checkpoint."""

from __future__ import annotations

import argparse

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import add_shared_options
from bicorseg.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint of the original BiCoR-Seg implementation",
        description=(
            "Read a checkpoint of the original public BiCoR-Seg code (Lightning checkpoint with 'net.' keys "
            "or a bare state dict) and write a self-describing bicorseg checkpoint. The original does not "
            "store its hyper-parameters: --dataset takes the classes, palette, bands and the recipe's HBIS "
            "layers, top-k ratio and min pixels of a published dataset (each can still be given); without "
            "it, give the ones it was trained with."
        ),
    )
    parser.add_argument("source", help="checkpoint of the original implementation")
    parser.add_argument("--output", required=True, help="bicorseg checkpoint to write")
    parser.add_argument(
        "--dataset",
        default=None,
        help="a published dataset (vaihingen, potsdam, loveda): its facts (classes, palette, bands) and "
        "its recipe's --layers, --topk-ratio and --min-pixels unless given",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of classes it was trained for (default: --dataset's)",
    )
    parser.add_argument("--layers", type=int, default=None, help="HBIS layers (checked against the weights)")
    parser.add_argument(
        "--topk-ratio", type=float, default=None, help="F2CE top-k ratio (default: the recipe's, else 1.0)"
    )
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=None,
        help="F2CE minimum number of pixels (default: the recipe's, else 64)",
    )
    add_shared_options(parser, "overwrite", overwrite="replace an existing output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg.checkpoint import convert_official_file

    ensure_writable(args.output, overwrite=args.overwrite)
    dataset = recipe = None
    layers, ratio, min_pixels = args.layers, args.topk_ratio, args.min_pixels
    taken = []  # what the recipe supplied
    if args.dataset:
        from bicorseg.data import get_release
        from bicorseg.training.config import load_config, shipped

        release = get_release(args.dataset)
        dataset, recipe = release.spec, release.name
        model = load_config(shipped("configs", release.name)).model  # the published recipe's
        given = (("layers", layers), ("top-k ratio", ratio), ("min pixels", min_pixels))
        taken = [name for name, value in given if value is None]
        layers = model.layers if layers is None else layers
        ratio = model.topk_ratio if ratio is None else ratio
        min_pixels = model.min_pixels if min_pixels is None else min_pixels
    num_classes = args.num_classes
    if num_classes is None:
        if dataset is None:
            raise ConfigError("--num-classes: give the number of classes (or --dataset)")
        num_classes = dataset.num_classes
    elif dataset is not None and num_classes != dataset.num_classes:
        raise ConfigError(
            f"--num-classes is {num_classes} but dataset {dataset.name!r} has {dataset.num_classes}"
        )
    checkpoint = convert_official_file(
        args.source,
        args.output,
        num_classes=num_classes,
        layers=layers,
        topk_ratio=1.0 if ratio is None else ratio,
        min_pixels=64 if min_pixels is None else min_pixels,
        dataset=dataset,
        recipe=recipe,
    )
    config = checkpoint.model_config
    origin = f"; {', '.join(taken)} from the {recipe} recipe" if taken else ""
    print(
        f"wrote {args.output}: {config.backbone}, {config.num_classes} classes, {config.layers} HBIS layers, "
        f"width {config.width}, {config.in_channels} bands, top-k ratio {config.topk_ratio}, "
        f"min pixels {config.min_pixels}{origin}"
    )
    return 0
