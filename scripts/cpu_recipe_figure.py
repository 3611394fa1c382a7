"""The picture of the CPU recipe run in "Your own data" (docs/training.md): held-out LoveDA scenes,
their labels and what the run predicts for them.

The run folder comes from ``benchmarks/cpu_recipe.py --keep DIR`` (a ``loveda-cpu`` run, which holds
LoveDA Rural scenes 12-15 out of training). ``bicorseg predict`` classifies the scenes with the run's
last checkpoint, as a user would, and the figure (one row per scene: image, labels, prediction) is
written small into ``docs/images/``::

    python scripts/cpu_recipe_figure.py --run /tmp/run --loveda ../shared/data/loveda/Train/Rural
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from geo_guide import finish, run  # the figure finish and the command runner of the GIS guide
from PIL import Image

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
NO_DATA = (96, 96, 96)  # LoveDA's no-data pixels (mask value 0) in the labels panel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a loveda-cpu run folder")
    parser.add_argument(
        "--loveda", type=Path, required=True, help="LoveDA/Train/Rural (images_png, masks_png)"
    )
    parser.add_argument("--scenes", nargs="+", default=["12", "15"], help="held-out scenes to show")
    parser.add_argument("--output", type=Path, default=IMAGES / "cpu-recipe-loveda.png")
    parser.add_argument("--side", type=int, default=256, help="pixels of each panel's side")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = yaml.safe_load((args.run / "config.yaml").read_text())["data"]["class_table"]
    names = [c["name"] for c in table["classes"]]
    colours = np.array([c["colour"] for c in table["classes"]] + [NO_DATA], dtype=np.uint8)
    codes = np.full(256, len(names), dtype=np.intp)  # raw mask value -> row of colours
    codes[[c["value"] for c in table["classes"]]] = np.arange(len(names))
    checkpoint = args.run / "checkpoints" / "last.ckpt"
    with tempfile.TemporaryDirectory(prefix="cpu-recipe-figure-") as work:
        inputs = [str(args.loveda / "images_png" / f"{scene}.png") for scene in args.scenes]
        run(["predict", *inputs, "--checkpoint", str(checkpoint), "--output", work])
        predicted = [np.asarray(Image.open(Path(work) / f"{scene}.png")) for scene in args.scenes]

    def small(array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize((args.side, args.side), resample))

    rows = len(args.scenes)
    figure, axes = plt.subplots(rows, 3, figsize=(9, 3.2 * rows + 1.0), dpi=80, squeeze=False)
    for row, (scene, classes) in enumerate(zip(args.scenes, predicted)):
        image = np.asarray(Image.open(args.loveda / "images_png" / f"{scene}.png").convert("RGB"))
        mask = np.asarray(Image.open(args.loveda / "masks_png" / f"{scene}.png"))
        panels = (
            (small(image, Image.Resampling.LANCZOS), f"scene {scene} (held out)"),
            (small(colours[codes[mask]], Image.Resampling.NEAREST), "labels"),
            (small(colours[classes], Image.Resampling.NEAREST), "predicted"),
        )
        for axis, (picture, title) in zip(axes[row], panels):
            axis.imshow(picture)
            axis.set_title(title, fontsize=10)
    palette = {name: tuple(int(v) for v in colour) for name, colour in zip([*names, "no data"], colours)}
    finish(figure, axes.ravel(), palette, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
