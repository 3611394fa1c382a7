"""``bicorseg demo``: the whole pipeline in minutes on a CPU, with nothing to download."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from bicorseg.atomic import ensure_writable
from bicorseg.cli.common import add_shared_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and apply a small BiCoR-Seg on generated aerial scenes, in minutes on a CPU",
        description=(
            "Generate aerial-like scenes with labels (fields, roads, buildings, water, trees, bare ground), "
            "train a small BiCoR-Seg on one CPU thread for a fixed number of steps, then segment a larger "
            "held-out scene. Writes to OUTPUT: model.ckpt, scene.tif (the held-out scene, EPSG:32633), "
            "prediction.tif (class indices, same CRS and transform), prediction_color.png, heatmaps.png "
            "(image, truth, prediction, per-class heatmaps), metrics.json (mIoU, OA, per-class IoU) and "
            "report.html (all of it on one self-contained page). Nothing is downloaded; the same seed "
            "gives the same scenes, model and scores."
        ),
    )
    # no defaults here: an option not given takes DemoConfig's
    parser.add_argument("--output", help="output folder (default ./demo_output)")
    parser.add_argument(
        "--minutes",
        type=float,
        help="time limit of the whole demo in minutes: training stops early if its steps do not fit in "
        "what the other steps leave (default 5)",
    )
    parser.add_argument("--seed", type=int, help="seed of the scenes and the training (default 42)")
    parser.add_argument(
        "--steps",
        type=int,
        help="training steps (default: the number the demo is sized for, which fits the default time "
        "limit on one busy CPU core); the same seed and steps give the same model",
    )
    # Smaller runs for tests and quick looks; not part of the documented interface.
    for flag, kind in (
        ("--train-scenes", int),
        ("--scene-size", int),
        ("--test-size", int),
        ("--crop-size", int),
        ("--width", int),
        ("--lr", float),
    ):
        parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)
    add_shared_options(parser, "threads", threads="torch CPU threads (default: 1, which makes the demo "
                       "reproducible and, on a machine shared with other jobs, is the fastest)")  # fmt: skip
    # training samples per step: not --batch-size, which is tiles per model call wherever a command takes it
    parser.add_argument("--train-batch-size", dest="batch_size", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _process_age() -> float:
    """Seconds since the ``bicorseg`` process started, so that the budget includes its start-up.

    0 when not run as the ``bicorseg`` command (e.g. from tests) or where ``/proc`` is missing.
    """
    if Path(sys.argv[0]).name not in ("bicorseg", "bicorseg.exe"):
        return 0.0
    try:
        with open("/proc/self/stat") as stream:
            start_ticks = float(stream.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as stream:
            uptime = float(stream.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return age if 0.0 <= age < 600.0 else 0.0


def run(args: argparse.Namespace) -> int:
    from bicorseg.demo.pipeline import DemoConfig, print_demo_summary, run_demo

    started = time.perf_counter() - _process_age()
    fields = {field.name for field in dataclasses.fields(DemoConfig)}
    config = DemoConfig(
        **{key: value for key, value in vars(args).items() if key in fields and value is not None}
    )
    ensure_writable(config.output, folder=True)
    result = run_demo(config, started=started)
    print_demo_summary(result)
    return 0
