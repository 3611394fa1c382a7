"""Benchmark: how much reduced-precision inference changes the predictions, against fp32.

For each model and image set, the same images go through the sliding-window predictor
(``predict_array``: tile 512, overlap 0.25, no TTA) once in fp32 and once per reduced precision
(``with_precision``, the wrapper ``load_model(..., precision=...)`` returns), and the script reports the
arg-max agreement over the labelled (or all) pixels, the mIoU of each precision where the labels fit
the model, the largest probability difference, the fp32 probability margin (top-1 minus top-2) at
the pixels that flip against all pixels, the process CPU time of each pass (in the JSON), and, on
one tile, the relative error of every stage (backbone stages, neck, HBIS layers, logits) to show
where the difference comes from.

Cases (each skipped, with the reason in the JSON, when its input is absent):

* ``demo``: the model and held-out labelled scene that ``bicorseg demo --output DIR`` writes.
* ``loveda``: a checkpoint trained with ``bicorseg train --config loveda-cpu`` on the LoveDA
  sample's Rural images 0-11, scored on its held-out images 12-15 (all 7 classes).
* ``loveda-on-dubai``: the same checkpoint on the first image of each Dubai tile (agreement only:
  other classes than LoveDA's).
* ``random-convnext-base``: the published architecture (ConvNeXt-B, C = 256) with random weights
  (seed 0, ImageNet statistics) on the LoveDA images 12-15 and the Dubai images: agreement only.

    python benchmarks/precision.py --demo demo_output --loveda runs/loveda-cpu/checkpoints/last.ckpt

Writes ``benchmarks/results/precision.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bicorseg.checkpoint import load_model
from bicorseg.data.io import read_image, read_mask
from bicorseg.inference import predict_array
from bicorseg.metrics import scores_from_confusion
from bicorseg.models import BiCoRSeg, ModelConfig
from bicorseg.precision import with_precision
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, normalise

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "precision.json"
LOVEDA_HELD_OUT = (12, 15)  # the loveda-cpu config validates on Rural images 12..15
LOVEDA_CLASSES = 7

Sample = tuple[str, np.ndarray, np.ndarray | None]  # name, normalised bands x H x W, labels or None


def normalised(image: np.ndarray, mean, std) -> np.ndarray:
    return normalise(image.astype(np.float32), mean, std)


def demo_samples(folder: Path, model: BiCoRSeg) -> list[Sample]:
    spec = model.dataset
    image = normalised(read_image(folder / "scene.tif"), spec.mean, spec.std)
    labels = read_mask(folder / "scene_labels.tif").astype(np.int64)
    return [("scene.tif", image, labels)]


def loveda_samples(data: Path, mean, std, with_labels: bool) -> list[Sample]:
    root = data / "loveda" / "Train" / "Rural"
    samples = []
    for index in range(LOVEDA_HELD_OUT[0], LOVEDA_HELD_OUT[1] + 1):
        image = normalised(read_image(root / "images_png" / f"{index}.png"), mean, std)
        labels = None
        if with_labels:  # raw LoveDA values: 0 no-data (ignored), 1..7 the classes 0..6
            raw = read_mask(root / "masks_png" / f"{index}.png").astype(np.int64)
            labels = np.where(raw == 0, LOVEDA_CLASSES, raw - 1)
        samples.append((f"loveda Rural {index}.png", image, labels))
    return samples


def dubai_samples(data: Path, mean, std) -> list[Sample]:
    paths = sorted((data / "dubai").glob("Tile */images/image_part_001.jpg"))
    return [
        (f"dubai {p.parent.parent.name}/{p.name}", normalised(read_image(p), mean, std), None) for p in paths
    ]


def stage_errors(model: BiCoRSeg, image: np.ndarray, precision: str) -> dict[str, float]:
    """Relative error (Frobenius norm) of every stage at ``precision`` against fp32, on one 512 tile."""
    x = torch.from_numpy(image[:, :512, :512].copy())[None]
    captured: dict[str, list[torch.Tensor]] = {}

    def keep(name: str) -> Callable:
        def hook(module, inputs, output) -> None:
            outputs = output if isinstance(output, list) else [output]
            if isinstance(output, tuple):  # an HBIS layer: (class embeddings, features, heatmap logits)
                outputs = [output[1]]
            for i, tensor in enumerate(outputs):
                key = f"{name} {i + 1}" if len(outputs) > 1 else name
                captured.setdefault(key, []).append(tensor.detach().float().clone())

        return hook

    handles = [
        model.backbone.register_forward_hook(keep("backbone stage")),
        model.neck.register_forward_hook(keep("neck")),
    ]
    handles += [
        layer.register_forward_hook(keep(f"HBIS layer {i + 1}")) for i, layer in enumerate(model.layers)
    ]
    logits = {}
    try:
        for name in ("fp32", precision):
            with torch.inference_mode():
                logits[name] = with_precision(model, name)(x)
    finally:
        for handle in handles:
            handle.remove()
    errors = {key: float((b - a).norm() / a.norm()) for key, (a, b) in captured.items()}
    errors["logits"] = float((logits[precision] - logits["fp32"]).norm() / logits["fp32"].norm())
    return errors


def compare(
    name: str, description: str, model: BiCoRSeg, samples: list[Sample], precisions: list[str], args
) -> dict:
    """Predictions of ``model`` on ``samples`` in fp32 and each precision; agreement and mIoU."""
    num_classes = model.config.num_classes
    ignore = model.dataset.ignore_index if model.dataset is not None else None
    totals = {p: {"agree": 0, "pixels": 0, "max_prob_diff": 0.0, "cpu_seconds": 0.0} for p in precisions}
    cpu = {"fp32": 0.0}
    confusion = {p: np.zeros((num_classes, num_classes), np.int64) for p in ["fp32", *precisions]}
    margins_flipped: dict[str, list[np.ndarray]] = {p: [] for p in precisions}
    margins_all: list[np.ndarray] = []
    labelled = all(labels is not None for _, _, labels in samples)
    for sample_name, image, labels in samples:
        probs = {}
        for precision in ["fp32", *precisions]:
            start = time.process_time()
            probs[precision] = predict_array(
                with_precision(model, precision),
                image,
                tile=args.tile,
                overlap=0.25,
                batch_size=args.batch_size,
            )
            seconds = time.process_time() - start
            cpu[precision] = cpu.get(precision, 0.0) + seconds
        valid = np.ones(image.shape[1:], bool) if labels is None else labels != ignore
        reference = probs["fp32"].argmax(0)
        top2 = np.sort(probs["fp32"], axis=0)[-2:]
        margin = (top2[1] - top2[0])[valid]
        margins_all.append(margin)
        for precision in ["fp32", *precisions]:
            classes = probs[precision].argmax(0)
            if labelled:
                index = labels[valid] * num_classes + classes[valid]
                confusion[precision] += np.bincount(index, minlength=num_classes**2).reshape(num_classes, -1)
            if precision == "fp32":
                continue
            flipped = (classes != reference)[valid]
            t = totals[precision]
            t["agree"] += int((~flipped).sum())
            t["pixels"] += int(valid.sum())
            t["max_prob_diff"] = max(
                t["max_prob_diff"], float(np.abs(probs[precision] - probs["fp32"]).max())
            )
            margins_flipped[precision].append(margin[flipped])
        print(f"  {name}: {sample_name}", flush=True)
    result = {
        "case": name,
        "model": description,
        "images": [s[0] for s in samples],
        "pixels": totals[precisions[0]]["pixels"],
        "labelled": labelled,
        "fp32_cpu_seconds": cpu["fp32"],
        "median_fp32_margin_all_pixels": float(np.median(np.concatenate(margins_all))),
        "precisions": {},
    }
    eval_classes = list(model.dataset.eval_classes) if model.dataset is not None else None
    if labelled:
        result["fp32_miou"] = scores_from_confusion(torch.from_numpy(confusion["fp32"]), eval_classes).miou
    for precision in precisions:
        t = totals[precision]
        flipped = np.concatenate(margins_flipped[precision])
        entry = {
            "argmax_agreement": t["agree"] / t["pixels"],
            "flipped_pixels": t["pixels"] - t["agree"],
            "max_prob_diff": t["max_prob_diff"],
            "median_fp32_margin_flipped_pixels": float(np.median(flipped)) if flipped.size else None,
            "cpu_seconds": cpu[precision],
            "stage_relative_error": stage_errors(model, samples[0][1], precision),
        }
        if labelled:
            miou = scores_from_confusion(torch.from_numpy(confusion[precision]), eval_classes).miou
            entry["miou"] = miou
            entry["miou_diff"] = miou - result["fp32_miou"]
        result["precisions"][precision] = entry
    return result


def random_base_model(seed: int = 0) -> BiCoRSeg:
    torch.manual_seed(seed)
    return BiCoRSeg(ModelConfig(num_classes=LOVEDA_CLASSES, backbone="convnext_base", width=256)).eval()


def table(results: list[dict]) -> str:
    lines = [
        "| case | model | pixels | precision | arg-max agreement | mIoU fp32 | mIoU | difference "
        "| median fp32 margin: flipped / all pixels | largest stage error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        for precision, e in r["precisions"].items():
            miou = (
                (f"{100 * r['fp32_miou']:.2f}", f"{100 * e['miou']:.2f}", f"{100 * e['miou_diff']:+.2f}")
                if r["labelled"]
                else ("", "", "")
            )
            flipped = e["median_fp32_margin_flipped_pixels"]
            stage, error = max(e["stage_relative_error"].items(), key=lambda item: item[1])
            lines.append(
                f"| {r['case']} | {r['model']} | {r['pixels']} | {precision} | {100 * e['argmax_agreement']:.3f} % | "
                f"{miou[0]} | {miou[1]} | {miou[2]} | "
                f"{'-' if flipped is None else f'{flipped:.2g}'} / {r['median_fp32_margin_all_pixels']:.2g} | "
                f"{stage} {100 * error:.2f} % |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = Path(os.environ.get("BICORSEG_SHARED", REPO.parent / "shared"))
    parser.add_argument("--demo", type=Path, help="output folder of 'bicorseg demo'")
    parser.add_argument("--loveda", type=Path, help="checkpoint from 'bicorseg train --config loveda-cpu'")
    parser.add_argument("--data", type=Path, default=shared / "data", help="the real sample data")
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=("bf16", "fp16"))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--skip-random", action="store_true", help="no random-weight ConvNeXt-B case")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    results = []
    if args.demo and (args.demo / "model.ckpt").is_file():
        model = load_model(args.demo / "model.ckpt")
        steps = "?"
        metrics = args.demo / "metrics.json"
        if metrics.is_file():
            steps = json.loads(metrics.read_text())["convention"].get("training_steps", "?")
        description = f"demo model ({model.config.backbone}, C = {model.config.width}, {steps} steps)"
        results.append(
            compare("demo", description, model, demo_samples(args.demo, model), args.precisions, args)
        )
    else:
        results.append({"case": "demo", "skipped": "no --demo folder with model.ckpt"})

    data_ok = (args.data / "loveda").is_dir()
    if args.loveda and args.loveda.is_file() and data_ok:
        model = load_model(args.loveda)
        spec = model.dataset
        description = (
            f"LoveDA-trained ({model.config.backbone}, C = {model.config.width}, {args.loveda.name})"
        )
        samples = loveda_samples(args.data, spec.mean, spec.std, with_labels=True)
        results.append(compare("loveda", description, model, samples, args.precisions, args))
        samples = dubai_samples(args.data, spec.mean, spec.std)
        results.append(compare("loveda-on-dubai", description, model, samples, args.precisions, args))
    else:
        reason = "no --loveda checkpoint" if data_ok else f"no sample data in {args.data}"
        results += [{"case": c, "skipped": reason} for c in ("loveda", "loveda-on-dubai")]

    if data_ok and not args.skip_random:
        samples = loveda_samples(args.data, IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, with_labels=False)
        samples += dubai_samples(args.data, IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT)
        description = "random weights (ConvNeXt-B, C = 256, seed 0)"
        results.append(
            compare("random-convnext-base", description, random_base_model(), samples, args.precisions, args)
        )

    report = {
        "benchmark": "reduced-precision inference against fp32 (sliding windows, tile "
        f"{args.tile}, overlap 0.25)",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
