"""Real imagery on a CPU: BiCoR-Seg against the same network without its HBIS layers.

On the LoveDA sample in ``../shared/data/loveda`` (Train/Rural images 0-11 for training, 12-15 for
validation, read in the official layout), trains the small CPU recipe (``configs/loveda-cpu.yaml``)
twice per seed under the same budget (steps, crops, optimizer, schedule, augmentation):

* ``bicorseg``: the full method (HBIS layers, heatmap supervision, Fisher loss);
* ``linear``: the baseline that drops the HBIS layers: backbone, fused neck and the same upsampling
  head, with a per-pixel linear classifier on the fused features (SoftCE + Dice).

Each run is scored on the 4 validation images (whole 1024 x 1024 images, one confusion matrix,
mIoU over LoveDA's 7 classes). Writes ``benchmarks/results/real_cpu.json`` and a Markdown table
``benchmarks/results/real_cpu.md``::

    python benchmarks/real_cpu.py [--data ../shared/data/loveda] [--epochs 100] [--seeds 42 43 44]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bicorseg.models import BiCoRSeg, ModelConfig, TrainOutput
from bicorseg.spec import DatasetSpec
from bicorseg.training.config import dataset_spec, load_config
from bicorseg.training.run import train

REPO = Path(__file__).resolve().parents[1]


class LinearBaseline(nn.Module):
    """BiCoR-Seg without HBIS layers: backbone, fused neck, upsampler, per-pixel linear classifier."""

    def __init__(self, config: ModelConfig, dataset: DatasetSpec) -> None:
        super().__init__()
        full = BiCoRSeg(config, dataset=dataset)  # same construction (and seeding order) as the method
        self.config, self.dataset = config, dataset
        self.backbone, self.neck, self.upsampler = full.backbone, full.neck, full.upsampler
        self.classifier = nn.Conv2d(config.width // 16, config.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> TrainOutput | torch.Tensor:
        height, width = x.shape[-2:]
        fused = self.neck(self.backbone(x), (height // 4, width // 4))
        logits = self.classifier(self.upsampler(fused))
        return TrainOutput(logits, None, [], []) if self.training else logits


def run_one(variant: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "data.root": str(args.data),
        "trainer.seed": seed,
        "trainer.max_epochs": args.epochs,
        "trainer.check_val_every_n_epoch": args.epochs,  # score once, at the end
        "trainer.progress_bar": False,
        "trainer.tensorboard": False,
        "trainer.num_threads": args.threads,
    }
    if variant == "linear":
        overrides["loss.final_fisher_weight"] = 0.0  # no class embeddings to separate
    config = load_config(args.config, overrides)
    spec = dataset_spec(config.data, config.model.to_dict())
    torch.manual_seed(seed)
    model = LinearBaseline(config.model, spec) if variant == "linear" else None
    output = work / f"{variant}-{seed}"
    start = time.perf_counter()
    result = train(config, output, spec=spec, model=model)
    seconds = time.perf_counter() - start
    report = json.loads((output / "val_metrics.json").read_text())
    params = sum(p.numel() for p in (model or BiCoRSeg(config.model, dataset=spec)).parameters())
    return {
        "variant": variant,
        "seed": seed,
        "miou": report["miou"],
        "mean_f1": report["mean_f1"],
        "oa": report["oa"],
        "iou_per_class": {name: c["iou"] for name, c in report["per_class"].items()},
        "steps": result.global_step,
        "epochs": result.epoch,
        "train_seconds": round(seconds, 1),
        "parameters": params,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        values = [r["miou"] for r in runs if r["variant"] == variant]
        summary[variant] = {
            "miou_mean": statistics.fmean(values),
            "miou_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "miou_per_seed": values,
            "oa_mean": statistics.fmean(r["oa"] for r in runs if r["variant"] == variant),
            "train_seconds_mean": statistics.fmean(
                r["train_seconds"] for r in runs if r["variant"] == variant
            ),
        }
    return summary


def markdown(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        "| variant | "
        + " | ".join(f"mIoU seed {s}" for s in seeds)
        + " | mean mIoU (± std) | mean OA | s / run |",
        "|---|" + "---|" * (len(seeds) + 3),
    ]
    for variant, s in result["summary"].items():
        per_seed = " | ".join(f"{100 * v:.2f}" for v in s["miou_per_seed"])
        lines.append(
            f"| {variant} | {per_seed} | {100 * s['miou_mean']:.2f} ± {100 * s['miou_std']:.2f} | "
            f"{100 * s['oa_mean']:.2f} | {s['train_seconds_mean']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("BICORSEG_SHARED", REPO.parent / "shared")) / "data" / "loveda",
    )
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "loveda-cpu.yaml")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of 3 steps (12 images, batch 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--variants", nargs="+", default=["bicorseg", "linear"], choices=["bicorseg", "linear"]
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "real_cpu.json")
    parser.add_argument("--work", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    if not (args.data / "Train" / "Rural" / "images_png").is_dir():
        print(f"LoveDA sample not found at {args.data} (Train/Rural/images_png)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="bicorseg-real-cpu-"))
    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            run = run_one(variant, seed, args, work)
            runs.append(run)
            print(f"{variant:9s} seed {seed}: mIoU {100 * run['miou']:.2f}  OA {100 * run['oa']:.2f}  "
                  f"({run['steps']} steps, {run['train_seconds']:.0f} s)", flush=True)  # fmt: skip
    config = load_config(args.config, {"data.root": str(args.data), "trainer.max_epochs": args.epochs})
    result = {
        "benchmark": "real_cpu",
        "data": "LoveDA sample, Train/Rural images 0-11 (train) and 12-15 (validation), 1024 x 1024, 0.3 m",
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "budget": {
            "epochs": args.epochs,
            "steps": runs[0]["steps"] if runs else None,
            "batch_size": config.data.batch_size,
            "crop_size": config.data.crop_size,
            "note": "same steps, crops, optimizer (AdamW in Lookahead), cosine schedule and augmentation "
            "for both variants; ConvNeXt-nano without pretrained weights, width 64",
        },
        "convention": "one confusion matrix over the 4 validation images (whole images, no TTA); "
        "mIoU over all 7 LoveDA classes; no-data pixels ignored",
        "variants": {
            "bicorseg": "full method: 2 HBIS layers (top-k 0.02 / 64 px), heatmap supervision, Fisher loss",
            "linear": "HBIS layers dropped: per-pixel linear classifier on the fused (upsampled) features, "
            "SoftCE + Dice",
        },
        "seeds": args.seeds,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "note": "shared machine: other jobs ran at the same time, so timings are indicative",
        },
        "runs": runs,
        "summary": summarise(runs),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    table = markdown(result)
    args.output.with_suffix(".md").write_text(
        "# Real imagery on a CPU (LoveDA sample)\n\n"
        + f"{result['data']}; {result['budget']['steps']} steps of {config.data.batch_size} crops of "
        + f"{config.data.crop_size} px per run; {result['convention']}.\n\n"
        + table
        + "\n"
    )
    print(table)
    if any(math.isnan(r["miou"]) for r in runs):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
