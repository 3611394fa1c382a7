"""What the LoveDA Rural sample holds for a learner that is not a network: a reference for the CPU recipe.

A gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``, not a bicorseg
dependency: ``pip install scikit-learn``) labels each pixel from colour and texture around it: the
image reduced 4 x 4 (0.3 m to 1.2 m), and per pixel its RGB, HSV, the RGB mean and the grey-level
spread in windows of 5, 17 and 49 reduced pixels (6, 20 and 59 m) and the mean gradient in windows
of 5 and 17. It trains on 200,000 labelled pixels drawn from the training scenes and predicts each
held-out scene; the prediction, enlarged back to 1024 x 1024, is scored against the full-resolution
mask with bicorseg's own scores (mIoU over the 7 classes, undefined classes left out of the mean).

Four folds: each block of four scenes is scored by a classifier trained on the other 12; the last
(train 0-11, score 12-15) is the ``loveda-cpu`` recipe's split. The four tell the score of one
block of scenes from what the data allow. Writes ``benchmarks/results/pixel_baseline.json`` and prints a table::

    python benchmarks/pixel_baseline.py --rural ../shared/data/loveda/Train/Rural
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier

from bicorseg.metrics import scores_from_confusion

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pixel_baseline.json"
CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
REDUCE = 4  # 1024 px scenes become 256 px
SAMPLES = 200_000


def features(image: np.ndarray) -> np.ndarray:
    """Per reduced pixel: colour and texture features, shape (pixels, features)."""
    side = image.shape[0] // REDUCE
    small = image.reshape(side, REDUCE, side, REDUCE, 3).mean(axis=(1, 3), dtype=np.float32)
    grey = small.mean(axis=-1)
    hsv = np.asarray(Image.fromarray(small.astype(np.uint8)).convert("HSV"), dtype=np.float32)
    columns = [small[..., c] for c in range(3)] + [hsv[..., c] for c in range(3)]
    for size in (5, 17, 49):
        columns += [ndimage.uniform_filter(small[..., c], size) for c in range(3)]
        mean = ndimage.uniform_filter(grey, size)
        columns.append(np.sqrt(np.maximum(ndimage.uniform_filter(grey * grey, size) - mean * mean, 0)))
    gradient = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    columns += [ndimage.uniform_filter(gradient, size) for size in (5, 17)]
    return np.stack(columns, axis=-1).reshape(-1, len(columns))


def load(rural: Path, scene: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene's features and its mask as class indices (-1 for no-data), full resolution."""
    image = np.asarray(Image.open(rural / "images_png" / f"{scene}.png").convert("RGB"))
    mask = np.asarray(Image.open(rural / "masks_png" / f"{scene}.png")).astype(np.int64) - 1
    return features(image), mask


def score(scenes: dict[int, tuple[np.ndarray, np.ndarray]], train: list[int], test: list[int]) -> dict:
    """Train on ``train``, score ``test``: mIoU and per-class IoU."""
    x = np.concatenate([scenes[i][0] for i in train])
    # the mask at each reduced pixel's centre: the label the features describe
    y = np.concatenate([scenes[i][1][REDUCE // 2 :: REDUCE, REDUCE // 2 :: REDUCE].ravel() for i in train])
    keep = np.flatnonzero(y >= 0)
    pick = np.random.default_rng(0).choice(keep, SAMPLES, replace=False)
    started = time.process_time()
    model = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x[pick], y[pick])
    confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.float64)
    for i in test:
        feats, mask = scenes[i]
        side = mask.shape[0] // REDUCE
        predicted = model.predict(feats).reshape(side, side).repeat(REDUCE, 0).repeat(REDUCE, 1)
        labelled = mask >= 0
        pairs = mask[labelled] * len(CLASSES) + predicted[labelled]
        counts = np.bincount(pairs, minlength=len(CLASSES) ** 2)
        confusion += torch.from_numpy(counts.reshape(len(CLASSES), len(CLASSES))).double()
    scores = scores_from_confusion(confusion)
    return {
        "train": train,
        "test": test,
        "miou": round(scores.miou, 4),
        "oa": round(scores.oa, 4),
        "iou": {name: round(float(v), 4) for name, v in zip(CLASSES, scores.iou)},
        "cpu_s": round(time.process_time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rural", type=Path, required=True, help="LoveDA Train/Rural (images_png, masks_png)"
    )
    args = parser.parse_args()
    scenes = {i: load(args.rural, i) for i in range(16)}
    folds = []
    for block in range(4):
        test = list(range(4 * block, 4 * block + 4))
        folds.append(score(scenes, [i for i in range(16) if i not in test], test))
    record = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "folds": folds,
        "folds_mean_miou": round(float(np.mean([f["miou"] for f in folds])), 4),
    }
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print("| scored scenes | mIoU (%) | " + " | ".join(CLASSES) + " |")
    print("|---" * (len(CLASSES) + 2) + "|")
    for row in folds:
        ious = " | ".join(f"{100 * row['iou'][c]:.1f}" for c in CLASSES)
        print(f"| {row['test'][0]}-{row['test'][-1]} | {100 * row['miou']:.1f} | {ious} |")
    print(f"mean over the four folds: {100 * record['folds_mean_miou']:.1f}")


if __name__ == "__main__":
    main()
