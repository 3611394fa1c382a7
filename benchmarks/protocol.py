"""The clean and paper protocols side by side: what each difference changes, measured where a CPU can.

Measures, without training anything:

* rotation rates of the training augmentation under ``rotate_draw: clean`` and ``paper`` (20000 draws);
* the share of padded pixels among the patch pixels of the ISPRS protocol: Potsdam exactly (every
  tile is 6000 x 6000), Vaihingen for a tile of the release's typical size 2000 x 2500 (estimate);
* how far the original's 8-bit bicubic rescale is from the clean antialiased bilinear one, on the real
  sample images of ``../shared/data`` (Vaihingen and Potsdam crops, LoveDA Rural images);
* how often the Vaihingen car zoom fires on the real Vaihingen crop (cut as one 512 px patch);
* the cost of each TTA: passes and pixels processed relative to one plain pass.

Writes ``benchmarks/results/protocol.json``::

    python benchmarks/protocol.py [--data ../shared/data] [--draws 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bicorseg.data import get_spec
from bicorseg.data.datasets import VAIHINGEN
from bicorseg.data.transforms import AugmentConfig, TrainTransform, rescale
from bicorseg.inference.tta import resolve_tta, tta_passes

REPO = Path(__file__).resolve().parents[1]


def rotation_rate(draw: str, p: float, draws: int, seed: int = 0) -> float:
    cfg = AugmentConfig(2, scales=(1.0,), crop_retries=0, rot90_p=p, hflip_p=0, vflip_p=0, mosaic_p=0,
                        ignore_index=9, rotate_draw=draw)  # fmt: skip
    transform = TrainTransform(cfg)
    image, mask = torch.arange(4.0).reshape(1, 2, 2), torch.zeros(2, 2, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    rotated = sum(not torch.equal(transform.apply(image, mask, generator=g)[0], image) for _ in range(draws))
    return rotated / draws


def padded_share(height: int, width: int, size: int = 1024, stride: int = 1024) -> float:
    """Padded pixels among the pixels of every patch cut from the tile padded to a multiple of ``size``.

    Padded here at the bottom and right (clean); the paper protocol's top and left give the same
    share, since the patch grid covers both ends of the padded tile alike."""
    ph, pw = -(-height // size) * size, -(-width // size) * size
    padding = np.zeros((ph, pw), bool)
    padding[height:, :] = True
    padding[:, width:] = True
    total = padded = 0
    for y in range(0, ph - size + 1, stride):
        for x in range(0, pw - size + 1, stride):
            padded += int(padding[y : y + size, x : x + size].sum())
            total += size * size
    return padded / total


def rescale_difference(path: Path, scale: float) -> dict[str, float]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    image = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))
    mask = torch.zeros(rgb.shape[:2], dtype=torch.int64)
    bicubic, _ = rescale(image, mask, scale, "bicubic")
    bilinear, _ = rescale(image, mask, scale, "bilinear")
    h, w = min(bicubic.shape[-2], bilinear.shape[-2]), min(bicubic.shape[-1], bilinear.shape[-1])
    diff = (bicubic[:, :h, :w] - bilinear[:, :h, :w]).abs()
    return {
        "mean_abs_grey_levels": float(diff.mean()),
        "share_above_4_levels": float((diff > 4).float().mean()),
    }


def zoom_fire_rate(data: Path, draws: int) -> float:
    from bicorseg.data.release.cutting import zoom_variants

    folder = data / "isprs" / "vaihingen"
    name = next((folder / "img_dir").glob("*.png")).name
    image = np.asarray(Image.open(folder / "img_dir" / name).convert("RGB")).transpose(2, 0, 1)
    raw = np.asarray(Image.open(folder / "ann_dir" / name))  # 0 boundary, 1..6 classes
    mask = np.where(raw == 0, 6, raw - 1).astype(np.uint8)
    zoom = VAIHINGEN.paper.zoom
    assert zoom is not None
    fired = sum(zoom_variants(f"draw{i}", image, mask, None, zoom) is not None for i in range(draws))
    return fired / draws


def tta_cost(mode: str, dataset: str | None = None) -> dict[str, float]:
    passes = tta_passes(resolve_tta(mode, get_spec(dataset) if dataset else None))
    return {
        "passes": len(passes),
        "pixels_vs_one_pass": sum(int(1024 * p.scale) ** 2 for p in passes) / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--draws", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {
        "machine": platform.platform(),
        "rotation_rate": {
            f"{draw} p={p}": rotation_rate(draw, p, args.draws)
            for draw in ("clean", "paper")
            for p in (0.5, 0.25)
        },
        "padded_share_of_patch_pixels": {
            "potsdam 6000x6000 stride 1024 (exact)": padded_share(6000, 6000),
            "vaihingen 2000x2500 stride 1024, test (estimate)": padded_share(2000, 2500),
            "vaihingen 2000x2500 stride 512, train (estimate)": padded_share(2000, 2500, stride=512),
        },
        "rescale_bicubic_8bit_vs_bilinear": {},
        "car_zoom_fire_rate_on_the_real_vaihingen_crop": zoom_fire_rate(args.data, 2000),
        "tta_cost": {
            "none": tta_cost("none"),
            "lr": tta_cost("lr"),
            "d4": tta_cost("d4"),
            **{f"paper {name}": tta_cost("paper", name) for name in ("vaihingen", "potsdam", "loveda")},
        },
    }
    images = {
        "vaihingen": next((args.data / "isprs" / "vaihingen" / "img_dir").glob("*.png")),
        "potsdam": next((args.data / "isprs" / "potsdam" / "img_dir").glob("*.png")),
        **{
            f"loveda {i}": args.data / "loveda" / "Train" / "Rural" / "images_png" / f"{i}.png"
            for i in (0, 1)
        },
    }
    for name, path in images.items():
        for scale in (0.75, 1.25, 1.5):
            results["rescale_bicubic_8bit_vs_bilinear"][f"{name} x{scale}"] = rescale_difference(path, scale)
    out = REPO / "benchmarks" / "results" / "protocol.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
