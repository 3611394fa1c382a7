"""``bicorseg submit loveda``: predict the LoveDA test images and write the archive the server accepts.

The LoveDA online server wants one single-band uint8 PNG per test image, with the image's file name,
1024 x 1024, values 0..6, all at the top level of a zip (a zip holding a folder scores zero). The
archive is checked after writing (count, names, size, value range) and only then renamed into place.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import (
    EVALUATION_PRECISION_HELP,
    TTA,
    add_shared_options,
    counter,
    evaluation_precision,
    tta_options,
)
from bicorseg.errors import CheckpointError, InputError

LOVEDA_SIZE = 1024
LOVEDA_CLASSES = 7
LOVEDA_TEST_COUNT = 1796  # Urban 820 + Rural 976 in the official release


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="write a validated LoveDA online-test archive",
        description=(
            "Predict every LoveDA test image and write the zip the official server accepts: one "
            "single-band uint8 PNG per image, same file name, 1024 x 1024, values 0..6, no folders. "
            "The archive is checked (count, names, size, value range) before it is put in place."
        ),
    )
    parser.add_argument("benchmark", choices=("loveda",), help="the online benchmark (loveda)")
    add_shared_options(
        parser, "checkpoint", checkpoint="a bicorseg checkpoint trained for LoveDA's 7 classes"
    )
    parser.add_argument(
        "--root",
        required=True,
        help="LoveDA root (with Test/{Urban,Rural}/images_png), a Test folder, or a folder of PNG images",
    )
    parser.add_argument("--output", required=True, help="the zip to write, e.g. submission.zip")
    add_shared_options(parser, *TTA, "batch_size", "device", "precision", precision=EVALUATION_PRECISION_HELP)
    add_shared_options(parser, "overwrite", overwrite="replace an existing zip")
    parser.set_defaults(func=run)


def find_test_images(root: str | os.PathLike) -> list[Path]:
    """The test images under a LoveDA root, a ``Test`` folder, or a flat folder of PNGs."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--root: folder not found: {root}")
    for base in (root / "Test", root):
        domains = [base / domain / "images_png" for domain in ("Urban", "Rural")]
        found = [p for d in domains if d.is_dir() for p in sorted(d.glob("*.png"))]
        if found:
            return found
    flat = sorted(p for p in root.glob("*.png") if p.is_file())
    if flat:
        return flat
    raise InputError(
        f"no test images in {root}: expected Test/{{Urban,Rural}}/images_png/*.png or a folder of PNG images"
    )


def validate_archive(path: str | os.PathLike, expected_names: list[str]) -> None:
    """Check a submission zip: flat, one PNG per expected name, uint8 single band, 1024 x 1024, 0..6."""
    import numpy as np
    from PIL import Image

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        nested = [n for n in names if "/" in n or "\\" in n]
        if nested:
            raise InputError(f"{path}: entries inside folders ({nested[0]}); the server scores them zero")
        if sorted(names) != sorted(expected_names):
            missing = sorted(set(expected_names) - set(names))
            extra = sorted(set(names) - set(expected_names))
            raise InputError(f"{path}: {len(missing)} missing and {len(extra)} unexpected entries")
        for name in names:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                if image.format != "PNG" or image.mode != "L":
                    raise InputError(
                        f"{path}: {name} is {image.format} mode {image.mode}, not a single-band PNG"
                    )
                if image.size != (LOVEDA_SIZE, LOVEDA_SIZE):
                    raise InputError(f"{path}: {name} is {image.size[0]}x{image.size[1]}, not 1024x1024")
                high = int(np.asarray(image).max())
            if high >= LOVEDA_CLASSES:
                raise InputError(f"{path}: {name} holds value {high}, outside 0..6")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from bicorseg.atomic import atomic_output
    from bicorseg.checkpoint import load_checkpoint
    from bicorseg.data.io import read_image
    from bicorseg.device import resolve_device
    from bicorseg.inference import PredictOptions
    from bicorseg.inference.tta import describe_tta, is_identity, resolve_tta, tta_name, with_tta
    from bicorseg.precision import precision_of, with_precision
    from bicorseg.spec import normalise

    PredictOptions(batch_size=args.batch_size)  # validates it
    ensure_writable(args.output, overwrite=args.overwrite)
    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.model_config
    if config.num_classes != LOVEDA_CLASSES:
        raise CheckpointError(f"{args.checkpoint} predicts {config.num_classes} classes; LoveDA has 7")
    if config.in_channels != 3:
        raise CheckpointError(f"{args.checkpoint} expects {config.in_channels} bands; LoveDA images are RGB")
    spec = checkpoint.dataset
    if spec is None:
        from bicorseg.data import get_spec

        spec = get_spec("loveda")
    elif spec.num_classes != LOVEDA_CLASSES:
        raise CheckpointError(f"{args.checkpoint} was trained for dataset {spec.name!r}, not LoveDA")
    images = find_test_images(args.root)
    names = [p.name for p in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two test images are named {duplicates[0]}: the flat archive cannot hold both")
    if len(images) != LOVEDA_TEST_COUNT:
        print(
            f"note: {len(images)} test images found; the official LoveDA test set has {LOVEDA_TEST_COUNT}",
            file=sys.stderr,
        )
    device = resolve_device(args.device)
    # LoveDA has no paper preparation: only --tta paper reproduces the original here
    precision = evaluation_precision(args.precision, args.tta == "paper")
    model = with_precision(checkpoint.build_model().to(device), precision, device)
    options = tta_options(args)
    specs = [spec, checkpoint.dataset]
    tta = resolve_tta(options["tta"], specs, options["tta_scales"], options["tta_merge"])
    scores = model if is_identity(tta) else with_tta(model, tta)
    if not is_identity(tta):
        print(f"test-time augmentation {tta_name(args.tta, specs)}: {describe_tta(tta)}", file=sys.stderr)

    output, progress = Path(args.output), counter("predicted")
    with atomic_output(output) as temp:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for start in range(0, len(images), args.batch_size):
                chunk = images[start : start + args.batch_size]
                batch = []
                for path in chunk:
                    array = read_image(path)
                    if array.shape != (3, LOVEDA_SIZE, LOVEDA_SIZE):
                        raise InputError(f"{path}: LoveDA test images are 3 x 1024 x 1024, got {array.shape}")
                    batch.append(
                        normalise(torch.from_numpy(np.asarray(array, np.float32)), spec.mean, spec.std)
                    )
                with torch.inference_mode():
                    labels = scores(torch.stack(batch).to(device)).argmax(1).to(torch.uint8).cpu().numpy()
                for path, label in zip(chunk, labels):
                    buffer = io.BytesIO()
                    # plain grey values, no palette: the LoveDA server reads single-band 0..6 PNGs
                    Image.fromarray(label, mode="L").save(buffer, format="PNG")
                    archive.writestr(path.name, buffer.getvalue())
                progress(start + len(chunk), len(images))
        validate_archive(temp, names)  # before the archive takes its name
    print(
        f"wrote {output}: {len(images)} predictions at precision {precision_of(model)}, checked "
        "(flat, 1024x1024 uint8, values 0..6)"
    )
    return 0
