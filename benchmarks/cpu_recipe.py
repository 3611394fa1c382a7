"""The CPU recipes on real imagery: what each choice gives on scenes the run did not train on, and its cost.

One invocation trains one variant of a shipped recipe from random weights in this process (the
``train`` command's own function, ``bicorseg.training.train``), validating only once, at the end,
on the recipe's held-out samples (LoveDA Rural 12-15 for ``loveda-cpu``; for the ``folder`` recipe
the samples given by ``--set data.val_samples=...``), and records:

* the held-out scores of that final validation (``val_metrics.json``: mIoU, per-class IoU, the
  share of the pixels each class holds, the 4-pixel pattern share of the predicted maps);
* the cost: steps, CPU time of this process (the training computation, ``trainer.num_threads``
  threads) and of its data-loading worker processes, wall time, and the load average of the
  machine sampled every 10 s while it ran (other jobs share it: wall time is inflated by them,
  CPU time much less).

The record goes into a JSON file (one entry per ``--name``; rerunning a name replaces it) and the
table of every entry is printed (and written beside it as Markdown). The table of docs/training.md
("What the CPU recipes reach"), each variant from random weights with one torch thread, at most two
at a time on the 2-core machine (R is LoveDA/Train/Rural)::

    B="python benchmarks/cpu_recipe.py --set data.root=$R"
    # the rows made before the recipe moved to ResNet-18 at 1.2 m: its former model and crop
    B0="$B --set model.backbone=convnext_nano --set model.downsample=1 --set model.width=64 --set data.crop_size=128"
    $B0 --name base300 --set data.crop_size=256 --set data.batch_size=4 --set loss.class_balance=0 \
        --set trainer.max_minutes=null --set trainer.max_steps=300
    $B0 --name lr2e-3 --set data.crop_size=256 --set data.batch_size=4 --set loss.class_balance=0 \
        --set trainer.max_minutes=null --set trainer.max_steps=300 --set optimizer.lr=2e-3
    $B0 --name balance0.5 --set data.crop_size=256 --set data.batch_size=4 \
        --set trainer.max_minutes=null --set trainer.max_steps=300
    $B0 --name crop128b12-150 --set loss.class_balance=0 --set trainer.max_minutes=null --set trainer.max_epochs=150
    $B0 --name balance0.5-crop128b12 --set trainer.max_minutes=null --set trainer.max_epochs=150
    $B0 --name shipped-20min --keep runs/loveda-cpu     # the recipe as shipped: its 20-minute budget
    $B0 --name shipped-20min-idle --keep runs/loveda-cpu    # the same, fewer other jobs
    F="--set trainer.max_minutes=null --set trainer.max_steps=1122"   # the steps the free machine made
    $B0 $F --name lr5e-4-1122 --set optimizer.lr=5e-4
    $B0 $F --name lr2e-3-1122 --set optimizer.lr=2e-3
    $B0 $F --name datastats-1122 --set 'data.class_table.bands=[red,green,blue]' \
        --set 'data.class_table.mean=[78.6,84.18,80.38]' --set 'data.class_table.std=[34.48,29.92,27.02]'
    $B0 $F --name balance0-1122 --set loss.class_balance=0
    $B0 $F --name topk1.0-1122 --set model.topk_ratio=1.0
    $B0 $F --name width96-1122 --set model.width=96
    for N in 1 7; do $B0 --name steps150-seed$N --set trainer.max_minutes=null \
        --set trainer.max_steps=150 --set trainer.seed=$N; done
    T="--set trainer.max_minutes=null --set trainer.max_steps=300"   # one change each at 300 steps
    $B0 $T --name shipped-300
    $B0 $T --name r18-300 --set model.backbone=timm:resnet18
    $B0 $T --name noaux-300 --set loss.aux_weight=0 --set loss.heatmap_weight=0 \
        --set loss.fisher_weight=0 --set loss.final_fisher_weight=0
    $B0 $T --name ratio1-300 --set data.augment.max_class_ratio=1.0
    for N in 42 1; do $B0 --name along900-seed$N --set trainer.max_minutes=null --set trainer.max_steps=900 \
        --set trainer.check_val_every_n_epoch=100 --set trainer.seed=$N; done   # validated every 100 steps
    for F in 0 1 2; do $B0 $T --name fold$F-300 \
        --set "data.train_samples=$(python -c "print([i for i in range(16) if i // 4 != $F])")" \
        --set "data.val_samples=$(python -c "print(list(range(4 * $F, 4 * $F + 4)))")"; done   # other held-out blocks
    D="--set model.backbone=timm:resnet18 --set model.downsample=4 --set data.crop_size=512"   # 1.2 m working resolution
    $B0 $D --name r18-ds4 --set trainer.max_minutes=null --set trainer.max_steps=300 --set trainer.check_val_every_n_epoch=100
    $B0 $D --name r18-ds4-20min
    for F in 0 1; do $B0 $D $T --name fold$F-r18-ds4-300 \
        --set "data.train_samples=$(python -c "print([i for i in range(16) if i // 4 != $F])")" \
        --set "data.val_samples=$(python -c "print(list(range(4 * $F, 4 * $F + 4)))")"; done   # two at once
    # (the r18-ds4 rows computed the objective at 512 px; training now stays at the working resolution)
    V8="--set data.train_samples=[0,1,2,3,4,5,6,7,12,13,14,15] --set data.val_samples=[8,9,10,11]"
    for W in 64 128 256; do $B0 $D --name w$W-20min --set model.width=$W
        $B0 $D $V8 --name fold2-w$W-20min --set model.width=$W; done   # each pair ran at once
    D8="--set model.backbone=timm:resnet18 --set model.downsample=8 --set data.crop_size=1024"   # 2.4 m
    $B0 $D8 --name ds8-20min; $B0 $D8 $V8 --name fold2-ds8-20min
    # the rows made while the recipe trained timm's ResNet-18 (the network of torchvision's, other random weights)
    B1="$B --set model.backbone=timm:resnet18"
    $B1 --name shipped-r18-20min --keep runs/loveda-cpu    # the recipe with width 256
    $B1 --name fold0-shipped-r18-20min --set data.train_samples=[4,5,6,7,8,9,10,11,12,13,14,15] \
        --set data.val_samples=[0,1,2,3]    # beside the run above
    $B1 --name fold1-shipped-r18-20min --set data.train_samples=[0,1,2,3,8,9,10,11,12,13,14,15] \
        --set data.val_samples=[4,5,6,7]
    V0="--set data.train_samples=[4,5,6,7,8,9,10,11,12,13,14,15] --set data.val_samples=[0,1,2,3]"
    $B1 --name shipped-r18-seed1 --set trainer.seed=1; $B1 $V0 --name fold0-shipped-r18-seed1 --set trainer.seed=1
    $B1 --name balance0.25-r18 --set loss.class_balance=0.25
    $B1 $V0 --name fold0-balance0.25-r18 --set loss.class_balance=0.25    # each pair ran at once
    $B1 --name w384-20min --set model.width=384; $B1 $V0 --name fold0-w384-20min --set model.width=384
    $B1 --name t2-along --set trainer.num_threads=2 --set trainer.check_val_every_n_epoch=100    # alone
    # the recipe as shipped now: torchvision's ResNet-18; in its budget beside folder-dubai-resnet18
    # (docs/training.md; load average about 10), then a fixed 515 steps on two blocks (each pair at once)
    $B --name shipped-resnet18-20min
    S="--set trainer.max_minutes=null --set trainer.max_steps=515"
    $B $S --name resnet18-515; $B $S $V0 --name fold0-resnet18-515
    # the other two blocks, and colour jitter on the first two (each pair at once, AMD EPYC, AVX2)
    V1="--set data.train_samples=[0,1,2,3,8,9,10,11,12,13,14,15] --set data.val_samples=[4,5,6,7]"
    $B $S $V1 --name fold1-resnet18-515 --keep runs/fold1; $B $S $V8 --name fold2-resnet18-515 --keep runs/fold2
    $B $S --name cj02-515 --set data.augment.colour_jitter=0.2 --keep runs/cj02
    $B $S $V0 --name fold0-cj02-515 --set data.augment.colour_jitter=0.2 --keep runs/fold0-cj02
    # test-time augmentation of a kept model: its scored scenes as a folder (scenes 12-15 copied to
    # block12/images and block12/masks), the recipe's class table (data.class_table) in loveda.yaml
    bicorseg evaluate --checkpoint runs/cj02/checkpoints/last.ckpt --dataset folder --root block12 \
        --split all --images images --masks masks --class-table loveda.yaml --tta d4
    python benchmarks/cpu_recipe.py --table

(``data.batch_size=12`` at ``crop_size=128`` takes all 12 training scenes in each step, so an epoch
is one step; at 256 x 4 an epoch is three.) ``--loveda-gis RURAL`` runs the ``geo`` recipe on the
same scenes written as GeoTIFFs with a label raster and a validation area.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "cpu_recipe.json"
GIS_KEYS = ("data.images", "data.labels", "data.val_area", "data.val_fraction", "data.class_table")
VAL_SCENES = (12, 13, 14, 15)  # the LoveDA Rural scenes held out, as in the loveda-cpu recipe
LOVEDA_CLASSES = {  # raw LoveDA codes, as in configs/loveda-cpu.yaml
    "name": "loveda",
    "classes": [
        {"name": name, "value": value}
        for value, name in enumerate(
            ["background", "building", "road", "water", "barren", "forest", "agriculture"], start=1
        )
    ],
    "ignore_values": [0],
}


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a thread."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        return {
            "mean": round(sum(self.samples) / len(self.samples), 2),
            "min": round(min(self.samples), 2),
            "max": round(max(self.samples), 2),
        }


def loveda_as_gis(rural: Path, folder: Path) -> dict[str, Any]:
    """The LoveDA Rural scenes as a GIS user has them, and the geo recipe's options for them.

    Each scene becomes a GeoTIFF (EPSG:32633, 0.3 m) at its own place along a row, 400 m apart; one
    label raster of the raw LoveDA codes (0 = no data) covers the row; the validation area is one
    polygon (a GeoPackage) over the scenes of ``VAL_SCENES``, so the run trains on the others and
    validates on those, as the ``loveda-cpu`` recipe does.
    """
    import numpy as np
    import pyogrio.raw
    import rasterio
    import shapely
    from PIL import Image
    from rasterio.transform import from_origin

    pitch, gsd, side, west, north = 400.0, 0.3, 1024, 500_000.0, 5_000_000.0
    folder.mkdir(parents=True, exist_ok=True)
    scenes = sorted((rural / "images_png").glob("*.png"), key=lambda p: int(p.stem))
    width = round(((len(scenes) - 1) * pitch + side * gsd) / gsd)
    labels = np.zeros((side, width), dtype=np.uint8)
    profile = {"driver": "GTiff", "crs": "EPSG:32633", "height": side, "width": side}
    for index, path in enumerate(scenes):
        image = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        transform = from_origin(west + index * pitch, north, gsd, gsd)
        with rasterio.open(folder / f"scene_{index:02d}.tif", "w", **profile, count=3, dtype="uint8",
                           transform=transform) as out:  # fmt: skip
            out.write(image)
        column = round(index * pitch / gsd)
        labels[:, column : column + side] = np.asarray(Image.open(rural / "masks_png" / path.name))
    with rasterio.open(folder / "labels.tif", "w", **{**profile, "width": width}, count=1, dtype="uint8",
                       transform=from_origin(west, north, gsd, gsd), nodata=0) as out:  # fmt: skip
        out.write(labels, 1)
    first, last = min(VAL_SCENES), max(VAL_SCENES)
    area = shapely.box(
        west + first * pitch - 1, north - side * gsd - 1, west + last * pitch + side * gsd + 1, north + 1
    )
    pyogrio.raw.write(folder / "val_area.gpkg", np.array([shapely.to_wkb(area)], dtype=object),
                      [np.array([1])], ["id"], crs="EPSG:32633", driver="GPKG", geometry_type="Polygon")  # fmt: skip
    return {
        "data.images": str(folder / "scene_*.tif"),
        "data.labels": str(folder / "labels.tif"),
        "data.val_area": str(folder / "val_area.gpkg"),
        "data.val_fraction": None,
        "data.class_table": LOVEDA_CLASSES,
    }


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def run_variant(config_name: str, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    from bicorseg.training.config import dataset_spec, load_config, shipped
    from bicorseg.training.run import train

    path = Path(config_name) if Path(config_name).suffix == ".yaml" else shipped("configs", config_name)
    fixed = {
        "trainer.check_val_every_n_epoch": 100_000,  # validate once, at the end (the run's budget does)
        "trainer.progress_bar": False,
        "trainer.tensorboard": False,
        "trainer.log_every_n_steps": 50,
    }
    config = load_config(path, {**fixed, **overrides})
    spec = dataset_spec(config.data, config.model.to_dict())
    self_before, children_before = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    start = time.perf_counter()
    with LoadSampler() as load:
        result = train(config, work, spec=spec)
    wall = time.perf_counter() - start
    main_cpu = _cpu(resource.getrusage(resource.RUSAGE_SELF)) - _cpu(self_before)
    loader_cpu = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - _cpu(children_before)
    report = json.loads((work / "val_metrics.json").read_text())
    support = {name: c["support_pixels"] for name, c in report["per_class"].items()}
    total = sum(support.values())
    return {
        "config": path.stem,
        "overrides": {k: v for k, v in overrides.items() if k not in ("data.root", *GIS_KEYS)},
        "resolved": {
            "model": config.model.to_dict(),
            "optimizer": {k: v for k, v in vars(config.optimizer).items()},
            "crop_size": config.data.crop_size,
            "batch_size": config.data.batch_size,
            "augment": config.data.augment
            if isinstance(config.data.augment, bool)
            else asdict(config.data.augment),
            "num_threads": config.trainer.num_threads,
            "num_workers": config.data.num_workers,
        },
        "steps": result.global_step,
        "epochs": result.epoch,
        "validated_at_step": report["convention"]["step"],
        "validations": validations(work / "logs" / "csv" / "metrics.csv"),
        "miou": report["miou"],
        "oa": report["oa"],
        "period4_share": report["period4_share"],
        "iou": {name: c["iou"] for name, c in report["per_class"].items()},
        "pixel_share": {name: round(n / total, 4) for name, n in support.items()} if total else {},
        "cpu_main_s": round(main_cpu, 1),
        "cpu_loaders_s": round(loader_cpu, 1),
        "wall_s": round(wall, 1),
        "load_1min": load.summary(),
        "torch_threads": torch.get_num_threads(),
    }


def validations(metrics_csv: Path) -> list[dict[str, Any]]:
    """Every validation of the run, from its CSV log: the step, the held-out mIoU and per-class IoU
    (one entry unless ``--set trainer.check_val_every_n_epoch=N`` asks for more)."""
    rows = [row for row in csv.DictReader(metrics_csv.open()) if row.get("val/miou")]
    return [
        {
            "step": int(row["step"]) + 1,  # the CSV logs it at the last step's 0-based index
            "miou": round(float(row["val/miou"]), 4),
            "iou": {
                k.removeprefix("val/iou_"): round(float(v), 4)
                for k, v in row.items()
                if k.startswith("val/iou_") and v
            },
        }
        for row in rows
    ]


def useful(record: dict[str, Any], floor: float = 0.05) -> bool:
    """Every class holding at least ``floor`` of the held-out pixels has an IoU above zero."""
    return all(
        (record["iou"].get(name) or 0.0) > 0
        for name, share in record["pixel_share"].items()
        if share >= floor
    )


def table(results: dict[str, Any]) -> str:
    lines = [
        "| variant | what changed | steps | held-out mIoU | classes >= 5 % all > 0 | 4-px pattern | "
        "CPU min (training / loaders) | wall min | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        changed = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "as shipped"
        lines.append(
            f"| {name} | {r['config']}: {changed} | {r['steps']} | {100 * r['miou']:.1f} | "
            f"{'yes' if useful(r) else 'no'} | {100 * r['period4_share']:.2f} % | "
            f"{r['cpu_main_s'] / 60:.1f} / {r['cpu_loaders_s'] / 60:.1f} | {r['wall_s'] / 60:.0f} | "
            f"{r['load_1min']['mean']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the variant's name in the results (a rerun replaces it)")
    parser.add_argument("--config", default="loveda-cpu", help="a shipped recipe's name or a YAML file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (YAML value)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    parser.add_argument("--table", action="store_true", help="only print the table of the results")
    parser.add_argument(
        "--loveda-gis",
        type=Path,
        default=None,
        metavar="RURAL",
        help="the geo recipe: write LoveDA/Train/Rural as GeoTIFFs, a label raster and a validation area",
    )
    args = parser.parse_args(argv)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {"runs": {}}
    if not args.table:
        if not args.name:
            parser.error("--name is required to run a variant")
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--set {item}: give KEY=VALUE")
            overrides[key] = yaml.safe_load(value)
        scratch = Path(tempfile.mkdtemp(prefix="bicorseg-cpu-recipe-"))
        work = args.keep or scratch / "run"
        if args.loveda_gis is not None:
            overrides = {**loveda_as_gis(args.loveda_gis, scratch / "gis"), **overrides}
        try:
            record = run_variant(args.config, overrides, work)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # the run folder too, unless --keep put it elsewhere
        gis = ["--loveda-gis", str(args.loveda_gis)] if args.loveda_gis is not None else []
        record["command"] = "python benchmarks/cpu_recipe.py " + " ".join(
            ["--name", args.name, "--config", args.config, *gis, *(f"--set {s}" for s in args.set)]
        )
        record["date"] = time.strftime("%Y-%m-%d %H:%M")
        if args.output.is_file():  # other variants may have finished while this one ran
            results = json.loads(args.output.read_text())
        results["runs"][args.name] = record
        results["machine"] = (
            f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, "
            f"torch {torch.__version__}, Python {platform.python_version()}"
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        print(json.dumps(record, indent=1), flush=True)
    text = table(results)
    args.output.with_suffix(".md").write_text(
        "# The CPU recipes on real imagery (benchmarks/cpu_recipe.py)\n\n" + text + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
