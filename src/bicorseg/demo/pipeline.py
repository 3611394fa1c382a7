"""The ``bicorseg demo`` pipeline: generate scenes, train, predict, explain, score and report.

Everything goes through the library's own code paths, so the demo exercises what a user runs:

1. procedural training scenes (:mod:`bicorseg.demo.scenes`) written as a folder dataset
   (``DIR/data/train/{images,masks}``) and one larger held-out scene (``DIR/scene.tif`` and its
   labels ``DIR/scene_labels.tif``), georeferenced in UTM;
2. training with the Lightning layer (:func:`bicorseg.training.train`, run folder ``DIR/training``)
   for a fixed number of steps on one CPU thread, with a warm-up and a cosine learning rate over
   the steps (:mod:`bicorseg.training.budget`; the progress bar is in :mod:`bicorseg.demo.callbacks`);
3. the trained model saved as a self-describing checkpoint ``DIR/model.ckpt``;
4. the held-out scene segmented by the windowed raster predictor (``DIR/prediction.tif``, with the
   scene's CRS and transform) and colourised (``DIR/prediction_color.png``);
5. the per-layer class heatmaps and the paper's heatmap figure (``DIR/heatmaps.png``, layer rasters in
   ``DIR/heatmaps/``);
6. the scores on the held-out scene by the library's metric convention (``DIR/metrics.json``);
7. the page to look at all of it, ``DIR/report.html`` (:mod:`bicorseg.report`).

The number of steps is fixed (:data:`DEFAULT_STEPS`, chosen so that the whole demo fits its
five-minute budget on a single busy CPU core): what the model learns does not depend on the speed
of the machine (a faster one just finishes sooner), and the same seed gives the same model run
after run (one CPU thread). ``minutes`` is a safety limit for the whole demo: training gets what
is left after generating the data, minus an estimate of what prediction, heatmaps, scoring and the
report take (``trainer.max_minutes``), and stops early if the steps do not fit, with the learning rate
annealed over the time it had; the summary and ``metrics.json`` then say how many steps were trained.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bicorseg.atomic import remove_stale_temps, scratch_folder
from bicorseg.data.io import write_png
from bicorseg.data.labels import colour_table
from bicorseg.defaults import DEFAULT_OVERLAP, DEFAULT_TILE, STRIDE
from bicorseg.demo.scenes import (
    DEMO_DATASET,
    generate_scene,
    scene_transform,
    write_scene_geotiff,
)
from bicorseg.errors import ConfigError, InputError

# Seconds kept back for everything after training, per megapixel of the held-out scene (prediction
# and heatmaps are two sliding-window passes, then the report), plus a fixed part (checkpoint,
# figure, metrics).
RESERVE_PER_MEGAPIXEL = 20.0
RESERVE_FIXED = 10.0
# Marks a folder as a demo output, so that a rerun may replace the demo's sub-folders in it.
MARKER = ".bicorseg-demo"
# Steps trained by default: they fit the five-minute budget on one busy CPU core (docs/benchmarks.md, "The demo").
DEFAULT_STEPS = 800
# The files a demo writes in its output folder, and what each is.
OUTPUTS = {
    "checkpoint": ("model.ckpt", "trained model (use with bicorseg predict / evaluate / heatmaps)"),
    "scene": ("scene.tif", "held-out scene (RGB GeoTIFF, EPSG:32633)"),
    "labels": ("scene_labels.tif", "its ground truth"),
    "prediction": ("prediction.tif", "predicted classes (GeoTIFF, same CRS and transform)"),
    "prediction_color": ("prediction_color.png", "predicted classes in colour"),
    "heatmaps": ("heatmaps.png", "image, truth, prediction and per-class heatmaps"),
    "metrics": ("metrics.json", "mIoU, OA and per-class scores (JSON)"),
    "report": (
        "report.html",
        "all of it on one page, the truth and the errors too: open it in a browser (self-contained, offline)",
    ),
}


@dataclass
class DemoConfig:
    """Settings of one demo run (the command line exposes ``output``, ``minutes``, ``seed``, ``steps``).

    The defaults are what the measurements of docs/benchmarks.md ("The demo") were made with.
    """

    output: Path = Path("demo_output")
    minutes: float = 5.0
    seed: int = 42
    train_scenes: int = 96
    scene_size: int = 320
    test_size: int = 1024
    crop_size: int = 128
    batch_size: int = 2  # small batches, more steps: faster learning for the same CPU time
    width: int = 128  # C; the head classifies C/16 channels per pixel, so narrower widths learn far slower
    layers: int = 2
    lr: float = 7e-3
    min_lr: float = 3e-5
    warmup_steps: int = 30
    steps: int = DEFAULT_STEPS
    threads: int = 1  # torch CPU threads: one is reproducible and, on a busy machine, the fastest
    tile: int = DEFAULT_TILE

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if not self.minutes > 0:
            raise ConfigError(f"must be positive, got {self.minutes}", key="minutes")
        if self.steps < 1:
            raise ConfigError(f"must be at least 1, got {self.steps}", key="steps")
        if self.threads < 1:
            raise ConfigError(f"must be at least 1, got {self.threads}", key="threads")
        if self.scene_size < self.crop_size:
            raise ConfigError(f"scene size {self.scene_size} is smaller than the crop {self.crop_size}")
        if self.crop_size % STRIDE:
            raise ConfigError(f"crop size must be a multiple of {STRIDE}, got {self.crop_size}")
        if self.train_scenes < self.batch_size:
            raise ConfigError(f"{self.train_scenes} training scenes do not fill a batch of {self.batch_size}")
        if self.test_size < 64:
            raise ConfigError(f"the held-out scene must be at least 64 pixels, got {self.test_size}")


@dataclass
class DemoResult:
    """What a demo run produced and how long it took."""

    output: Path
    files: dict[str, Path]
    metrics: dict[str, Any]
    steps: int  # trained
    planned_steps: int  # asked for; more than ``steps`` when the time budget stopped training
    epochs: int
    total_seconds: float
    timings: dict[str, float]  # seconds per step of the demo


def _train_config(config: DemoConfig, data_root: Path, seconds: float) -> Any:
    from bicorseg.training.config import build_config

    return build_config(
        {
            "model": {
                "backbone": "convnext_nano",
                "width": config.width,
                "layers": config.layers,
                "min_pixels": 4,
                "subpixel_init": "independent",  # the start the demo's scores in docs/benchmarks.md had
            },
            "loss": {},
            "data": {
                "dataset": "folder",
                "root": str(data_root),
                "train_splits": ["train"],
                "val_split": None,  # the held-out scene is scored after training, as a whole raster
                "crop_size": config.crop_size,
                "batch_size": config.batch_size,
                "num_workers": 0,  # one thread on one core: loading in the training process is cheapest
                # same ground sampling distance everywhere: no rescaling; flips and rotations only
                "augment": {
                    "scales": [1.0],
                    "crop_retries": 0,
                    "mosaic_p": 0.0,
                    "rot90_p": 0.5,
                    "flip_p": 0.5,
                },
            },
            "optimizer": {
                "lr": config.lr,
                "min_lr": config.min_lr,
                "schedule": "cosine",  # per step, over the steps (or the time, if that ends first)
                "warmup_steps": config.warmup_steps,
                "lookahead": True,
            },
            "trainer": {
                "max_epochs": 100_000,  # max_steps (or the time budget) stops the run
                "max_steps": config.steps,
                "max_minutes": seconds / 60.0,
                "accelerator": "cpu",
                "devices": 1,
                "seed": config.seed,
                "progress_bar": False,  # the demo draws its own bar over the steps
                "log_lines": False,
                "tensorboard": False,
                "log_every_n_steps": 10,
                "num_threads": config.threads,
            },
        },
        spec=DEMO_DATASET,
    )


# --------------------------------------------------------------------------------------------------
# Steps


def _scene_seed(seed: int, index: int) -> int:
    # Distinct, reproducible seeds for the training scenes (index >= 0) and the held-out one (-1).
    return seed * 100_003 + (index + 1) * 7919


def _write_training_data(config: DemoConfig, root: Path, progress: Progress) -> None:
    task = progress.add_task("generating training scenes", total=config.train_scenes, info="")
    for index in range(config.train_scenes):
        seed = _scene_seed(config.seed, index)
        image, mask = generate_scene(config.scene_size, seed)
        transform = scene_transform(config.scene_size, seed)
        name = f"scene_{index:03d}.tif"
        write_scene_geotiff(root / "train" / "images" / name, image, transform)
        write_scene_geotiff(root / "train" / "masks" / name, mask, transform, palette=DEMO_DATASET.palette)
        progress.advance(task)


class _PredictorProgress:
    """Adapts the predictor's progress protocol (start, advance) to a rich progress bar."""

    def __init__(self, progress: Progress, description: str) -> None:
        self.progress, self.description, self.task = progress, description, None

    def start(self, name: str, total: int) -> None:
        self.task = self.progress.add_task(self.description, total=total, info=name)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - start, 2)


def _claim_output(out: Path) -> None:
    """Create the output folder, or accept an existing one that is empty or a previous demo's.

    A rerun replaces the demo's sub-folders (``data``, ``training``, ``heatmaps``); in any other
    non-empty folder those names could be someone's data, so it is refused.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder", key="output")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise InputError(
            f"{out}: folder is not empty and holds no previous demo output; give a new or empty folder",
            key="output",
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by bicorseg demo; a rerun may replace this folder's demo outputs\n")


def run_demo(config: DemoConfig, console: Console | None = None, started: float | None = None) -> DemoResult:
    """Run the whole demo into ``config.output`` (see the module docstring); returns what it wrote.

    ``started`` (a ``time.perf_counter`` value) is when the budget began, e.g. when the command was
    launched; default: now.
    """
    from bicorseg.checkpoint import load_checkpoint, save_checkpoint
    from bicorseg.inference import PredictOptions, Predictor, export_heatmaps, model_info
    from bicorseg.metrics import ConfusionMatrix, Convention, EvaluationReport, write_report_json
    from bicorseg.models.hub import Tiling
    from bicorseg.report import ReportItem, write_report
    from bicorseg.training import train

    console = console or Console()
    start = time.perf_counter() if started is None else started
    deadline = start + config.minutes * 60.0
    out = config.output
    data_root, run_dir, heat_dir = out / "data", out / "training", out / "heatmaps"
    _claim_output(out)
    remove_stale_temps(out)  # a killed demo's temporary files and folders
    for stale in (data_root, run_dir, heat_dir):  # a previous demo's intermediate folders
        shutil.rmtree(stale, ignore_errors=True)
    files = {key: out / name for key, (name, _) in OUTPUTS.items()}
    timings: dict[str, float] = {}
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        # 1. data
        with _timed(timings, "data"):
            _write_training_data(config, data_root, progress)
            test_seed = _scene_seed(config.seed, -1)
            scene, truth = generate_scene(config.test_size, test_seed)
            transform = scene_transform(config.test_size, test_seed)
            write_scene_geotiff(files["scene"], scene, transform)
            write_scene_geotiff(files["labels"], truth, transform, palette=DEMO_DATASET.palette)

        # 2. training, with what is left of the budget after the reserve for the later steps
        reserve = RESERVE_FIXED + RESERVE_PER_MEGAPIXEL * config.test_size**2 / 1e6
        seconds = deadline - time.perf_counter() - reserve
        if seconds < 5:
            raise ConfigError(
                f"{config.minutes:g} leaves {max(seconds, 0):.0f} s for training; give more time",
                key="minutes",
            )
        from bicorseg.demo.callbacks import StepProgress

        # Lightning's start-up notices that arrive as warnings (train silences its info lines)
        with _timed(timings, "training"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(GPU available|TPU available|LeafSpec).*")
            callbacks = [StepProgress(progress, config.steps)]
            result = train(
                _train_config(config, data_root, seconds), run_dir, spec=DEMO_DATASET, callbacks=callbacks
            )
        if result.last_checkpoint is None:  # pragma: no cover - Lightning always writes it at the end
            raise ConfigError(f"training wrote no checkpoint in {run_dir / 'checkpoints'}")

        # 3. the checkpoint, in the plain self-describing format
        model = load_checkpoint(result.last_checkpoint).build_model()
        extra = {
            "demo": {
                "seed": config.seed,
                "steps": result.global_step,
                "training_seconds": timings["training"],
            }
        }
        # predict's default tiling is the one the demo evaluates with (its crops are smaller: see
        # docs/prediction.md, "Tiling honesty"), so that a plain predict reproduces the reported scores
        tiling = Tiling(config.tile, DEFAULT_OVERLAP, "checkpoint")
        save_checkpoint(model, files["checkpoint"], extra=extra, tiling=tiling)

        # 4. prediction of the held-out scene through the windowed raster predictor
        with _timed(timings, "prediction"):
            options = PredictOptions(tile=config.tile, overlap=DEFAULT_OVERLAP, batch_size=2, overwrite=True)
            predictor = Predictor(model, model_info(model, str(files["checkpoint"])), options)
            with scratch_folder(out, "predict") as scratch:  # the prediction is named after the input
                written = predictor.predict_file(
                    files["scene"],
                    scratch,
                    progress=_PredictorProgress(progress, "predicting held-out scene"),
                )
                os.replace(written.outputs["class"], files["prediction"])
            with rasterio.open(files["prediction"]) as src:
                prediction = src.read(1)
            write_png(
                files["prediction_color"], colour_table(DEMO_DATASET.palette)[prediction].transpose(2, 0, 1)
            )

        # 5. heatmaps and the heatmap figure
        with _timed(timings, "heatmaps"):
            task = progress.add_task("class heatmaps and figure", total=1, info="")
            heat = export_heatmaps(
                model, files["scene"], heat_dir, label=files["labels"], tile=config.tile, batch_size=2
            )
            os.replace(heat.figure, files["heatmaps"])
            progress.advance(task)

    # 6. scores on the held-out scene, by the library's convention
    matrix = ConfusionMatrix(DEMO_DATASET.num_classes, DEMO_DATASET.ignore_index)
    matrix.update(torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)))
    report = EvaluationReport.from_confusion(
        matrix.compute(),
        DEMO_DATASET.class_names,
        DEMO_DATASET.eval_classes,
        Convention(
            DEMO_DATASET.name,
            split=f"held-out scene {config.test_size} x {config.test_size} px (seed {test_seed})",
            label_variant=DEMO_DATASET.label_variant,
            mode=f"the whole scene (sliding windows: tile {config.tile}, overlap {DEFAULT_OVERLAP})",
            tta="none",
            extra={
                "training_steps": result.global_step,
                "training_steps_planned": config.steps,
                "training_seconds": timings["training"],
                "torch_threads": config.threads,
            },
        ),
    )
    write_report_json(report, files["metrics"])

    # 7. the page to look at it all
    with _timed(timings, "report"):
        trained = f"{result.global_step} training steps" + (
            f" of {config.steps} (stopped by the time budget)" if result.global_step < config.steps else ""
        )
        write_report(
            [
                ReportItem(
                    files["prediction"],
                    files["scene"],
                    list(heat.outputs),
                    name="held-out scene",
                    labels=files["labels"],
                )
            ],
            files["report"],
            metrics=files["metrics"],
            title="bicorseg demo",
            subtitle=f"seed {config.seed}, {trained}; held-out scene {config.test_size} x {config.test_size} px",
        )
    total = time.perf_counter() - start  # from ``started``: the command's start-up included
    return DemoResult(
        output=out,
        files=files,
        metrics=report.to_dict(),
        steps=result.global_step,
        planned_steps=config.steps,
        epochs=result.epoch,
        total_seconds=total,
        timings=timings,
    )


def print_demo_summary(result: DemoResult, console: Console | None = None) -> None:
    """The closing summary: scores on the held-out scene and where every output went."""
    console = console or Console()
    metrics = result.metrics
    scores = Table(title="held-out scene", show_header=True, header_style="bold")
    scores.add_column("class")
    scores.add_column("IoU", justify="right")
    for name, values in metrics["per_class"].items():
        iou = values["iou"]
        scores.add_row(name, "n/a" if iou is None else f"{100 * iou:.1f}")
    scores.add_row("[bold]mIoU[/bold]", f"[bold]{100 * (metrics['miou'] or 0):.1f}[/bold]")
    scores.add_row("OA", f"{100 * (metrics['oa'] or 0):.1f}")
    console.print(scores)
    console.print(
        f"Trained {result.steps} steps ({result.epochs} epochs) in {result.timings['training']:.0f} s; "
        f"whole demo {result.total_seconds:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.timings.items())}).",
        highlight=False,
    )
    if result.steps < result.planned_steps:  # the time budget stopped training
        console.print(
            f"[bold]The time budget stopped training after {result.steps} of {result.planned_steps} "
            "steps[/bold]: this machine is slower than the demo is sized for, and the scores are lower "
            "than a full run's. Give more time (bicorseg demo --minutes) for the full number of steps.",
            highlight=False,
        )
    # Plain lines, never truncated: the paths are what the user needs from the summary.
    entries = [
        *OUTPUTS.values(),
        ("heatmaps/", "per-layer heatmap rasters"),
        ("training/", "training run (config, checkpoints, CSV logs)"),
        ("data/", "the generated training scenes"),
    ]
    width = max(len(name) for name, _ in entries)
    console.print(f"Outputs in {result.output.resolve()}:", soft_wrap=True, highlight=False)
    for name, text in entries:
        console.print(f"  {name:<{width}}  {text}", soft_wrap=True, highlight=False)
