"""Training augmentation of the published recipes (docs/METHOD.md, section 6), applied jointly to image and mask.

Build it as ``TrainTransform(AugmentConfig(crop_size, ...))`` and pass it to a bicorseg dataset
(``build_dataset(..., transform=...)``). For every sample, in this order:

1. **mosaic** (probability ``mosaic_p``): the sample and three others drawn at random from the same
   dataset are cut at a random centre (in the middle half of the sample's size) into the four
   quarters of one image of the sample's size; each piece is a random crop of its image (padded if
   too small). The dataset gives the transform access to its samples through
   ``transform.sample(load, index, length)`` (see :mod:`bicorseg.data.base`).
2. **random rescale** by one factor drawn from ``scales``; labels are never interpolated.
   ``rescale_interpolation: bilinear`` (the clean default): image bilinear with antialiasing, size
   rounded, mask nearest neighbour at pixel centres. ``bicubic`` (the original code's): Pillow's
   bicubic resize of 8-bit values, whose two separable passes each round and clip to 0..255 (images
   that are not 8-bit integers use Pillow's float resampler), size truncated (``int(s * side)``),
   mask with Pillow's nearest neighbour: the very pixels of the original's ``RandomScale``;
3. **class-ratio crop** of ``crop_size``: a random crop is retried (up to ``crop_retries`` more times,
   the last one is kept) while one class covers ``max_class_ratio`` or more of its labelled pixels, or
   it holds fewer than two classes; images smaller than the crop are padded (image 0, mask ignore);
4. **rot90** (probability ``rot90_p``), **horizontal** and **vertical flips** (``hflip_p``, ``vflip_p``;
   ``flip_p`` sets both). ``rotate_draw: clean`` (the default) turns by 90, 180 or 270 degrees, so
   ``rot90_p`` is the rate of rotated samples; ``paper`` draws the number of quarter turns from
   {0, 1, 2, 3} after the probability test, as the original (albumentations' ``RandomRotate90``):
   the real rotation rate is 0.75 ``rot90_p``.
5. **colour jitter** (``colour_jitter`` j > 0): each band ``b`` becomes ``gain * (mean + contrast *
   (b - mean))`` with its own gain and contrast drawn from ``[1 - j, 1 + j]`` (``mean`` the band's
   mean over the crop).

Normalisation ``(x - spec.mean) / spec.std`` is done by the dataset after the transform. The image
is float32 in input units throughout, the mask int64. ``ignore_index=None`` takes the ignore
index of the dataset the transform is given to.

Randomness comes from the transform's own ``torch.Generator`` seeded with ``seed`` and the
data-parallel rank: in the main process once; in each DataLoader worker also from the worker's
seed (which torch derives from the main process's RNG for every epoch), so workers and ranks never
repeat each other and a seeded run is reproducible. ``transform(image, mask, generator=g)`` uses a given generator instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from bicorseg.data.labels import nearest_indices
from bicorseg.data_options import AugmentOptions
from bicorseg.errors import ConfigError
from bicorseg.spec import DatasetSpec

Pair = tuple[torch.Tensor, torch.Tensor]  # image (float32 C x H x W, input units), mask (int64 H x W)


@dataclass(frozen=True)
class AugmentConfig(AugmentOptions):
    """The training augmentation of one dataset: :class:`AugmentOptions` with the crop size, the
    ignore index (None: the dataset's) and the seed."""

    crop_size: int
    ignore_index: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_size < 1:
            raise ConfigError(f"must be positive, not {self.crop_size}", key="crop_size")


# ------------------------------------------------------------------------------------------ small ops


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high)."""
    if high <= low + 1:
        return low
    return int(torch.randint(low, high, (1,), generator=generator))


def _rand(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``H x W`` label map (pixel centres, :func:`nearest_indices`)."""
    height, width = mask.shape[-2:]
    rows = torch.from_numpy(nearest_indices(height, size[0])).to(mask.device)
    cols = torch.from_numpy(nearest_indices(width, size[1])).to(mask.device)
    return mask[..., rows, :][..., cols]


def _pil_resize(plane: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """One band resized by Pillow (``size`` is height x width): 8-bit, 32-bit integer or float mode."""
    if plane.dtype == np.uint8:
        picture = Image.fromarray(plane, mode="L")
    elif np.issubdtype(plane.dtype, np.integer):
        picture = Image.fromarray(plane.astype(np.int32), mode="I")
    else:
        picture = Image.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(picture.resize((size[1], size[0]), resample))


def rescale(image: torch.Tensor, mask: torch.Tensor, scale: float, interpolation: str = "bilinear") -> Pair:
    """Resize image and mask by ``scale`` (see the module docstring, step 2, for ``interpolation``)."""
    if scale == 1.0:
        return image, mask
    if interpolation == "bilinear":
        size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
        resized = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return resized, resize_mask(mask, size)
    size = (max(1, int(image.shape[-2] * scale)), max(1, int(image.shape[-1] * scale)))
    # Pillow's bicubic resize per band: on 8-bit values when every value is an integer in 0..255
    # (Pillow then rounds and clips after each of its two passes, as the original's PIL images are),
    # else on floats
    array = image.detach().cpu().numpy()
    rounded = np.rint(array)
    eight_bit = (
        bool(np.all(np.abs(array - rounded) < 1e-3)) and array.min() >= -1e-3 and array.max() <= 255.001
    )
    planes = rounded.astype(np.uint8) if eight_bit else array.astype(np.float32)
    resized_image = np.stack([_pil_resize(plane, size, Image.Resampling.BICUBIC) for plane in planes])
    labels = mask.detach().cpu().numpy()
    resized_mask = _pil_resize(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.int32), size,
                               Image.Resampling.NEAREST)  # fmt: skip
    return (
        torch.from_numpy(resized_image.astype(np.float32)).to(image.device, image.dtype),
        torch.from_numpy(resized_mask.astype(np.int64)).to(mask.device, mask.dtype),
    )


def pad_to(image: torch.Tensor, mask: torch.Tensor, height: int, width: int, ignore_index: int) -> Pair:
    """Pad at the bottom and right to at least ``height x width`` (image 0, mask ignore)."""
    h, w = image.shape[-2:]
    if h >= height and w >= width:
        return image, mask
    size = (max(h, height), max(w, width))
    padded = image.new_zeros((image.shape[0], *size))
    padded[:, :h, :w] = image
    padded_mask = mask.new_full(size, ignore_index)
    padded_mask[:h, :w] = mask
    return padded, padded_mask


def random_crop(
    image: torch.Tensor,
    mask: torch.Tensor,
    height: int,
    width: int,
    ignore_index: int,
    generator: torch.Generator,
) -> Pair:
    image, mask = pad_to(image, mask, height, width, ignore_index)
    y = _randint(0, mask.shape[-2] - height + 1, generator)
    x = _randint(0, mask.shape[-1] - width + 1, generator)
    return image[:, y : y + height, x : x + width], mask[y : y + height, x : x + width]


def _balanced(mask: torch.Tensor, max_ratio: float, ignore_index: int) -> bool:
    labelled = mask[mask != ignore_index]
    if labelled.numel() == 0:
        return False
    counts = torch.bincount(labelled.flatten())
    counts = counts[counts > 0]
    return counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < max_ratio


def class_ratio_crop(
    image: torch.Tensor,
    mask: torch.Tensor,
    size: int,
    max_ratio: float,
    retries: int,
    ignore_index: int,
    generator: torch.Generator,
) -> Pair:
    """A random ``size`` crop, retried while one class dominates (the last try is kept)."""
    image, mask = pad_to(image, mask, size, size, ignore_index)
    for _ in range(retries + 1):
        crop = random_crop(image, mask, size, size, ignore_index, generator)  # padded already
        if _balanced(crop[1], max_ratio, ignore_index):
            break
    return crop


def colour_jitter(image: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Each band's gain and contrast around its mean drawn from ``[1 - strength, 1 + strength]``."""
    factors = 1.0 + strength * (2.0 * torch.rand((2, image.shape[0], 1, 1), generator=generator) - 1.0)
    gain, contrast = factors.to(image.dtype)
    mean = image.mean(dim=(-2, -1), keepdim=True)
    return gain * (mean + contrast * (image - mean))


def four_image_mosaic(samples: Sequence[Pair], ignore_index: int, generator: torch.Generator) -> Pair:
    """Four samples as the quarters of one image of the first sample's size, split at a random centre."""
    height, width = samples[0][1].shape
    cy = _randint(height // 4, height - height // 4 + 1, generator)
    cx = _randint(width // 4, width - width // 4 + 1, generator)
    sizes = ((cy, cx), (cy, width - cx), (height - cy, cx), (height - cy, width - cx))
    pieces = [
        random_crop(img, msk, h, w, ignore_index, generator) for (img, msk), (h, w) in zip(samples, sizes)
    ]
    top = [torch.cat([pieces[0][k], pieces[1][k]], -1) for k in (0, 1)]
    bottom = [torch.cat([pieces[2][k], pieces[3][k]], -1) for k in (0, 1)]
    return torch.cat([top[0], bottom[0]], -2), torch.cat([top[1], bottom[1]], -2)


# --------------------------------------------------------------------------------------------- pipeline


class SeededGenerator:
    """A ``torch.Generator`` from a seed, re-derived in each DataLoader worker (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._key: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Generators are per process: a worker builds its own from the seed.
        return {"seed": self.seed, "_generator": None, "_key": None}

    def get(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = int(torch.distributed.get_rank()) if distributed else int(os.environ.get("RANK", 0))
        key = (rank, None if info is None else int(info.seed))
        if self._generator is None or self._key != key:
            # Seed, data-parallel rank and worker seed: ranks and workers never repeat each other.
            entropy = [self.seed, key[0]] + ([] if key[1] is None else [key[1]])
            seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
            self._generator = torch.Generator().manual_seed(seed)
            self._key = key
        return self._generator


class TrainTransform:
    """The training augmentation as one seeded joint transform (see the module docstring)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self._random = SeededGenerator(config.seed)

    def for_spec(self, spec: DatasetSpec) -> TrainTransform:
        """This transform bound to a dataset's spec (its ignore index, when it was left as None)."""
        if self.config.ignore_index is not None:
            return self
        return TrainTransform(replace(self.config, ignore_index=spec.ignore_index))

    def _ignore(self) -> int:
        if self.config.ignore_index is None:
            raise ConfigError(
                "augmentation: ignore_index is unknown; pass it or give the transform to a dataset"
            )
        return self.config.ignore_index

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> Pair:
        """Rescale, class-ratio crop, rot90, flips and colour jitter of (image ``C x H x W``, mask ``H x W``)."""
        cfg = self.config
        g = generator if generator is not None else self._random.get()
        ignore = self._ignore()
        scale = cfg.scales[_randint(0, len(cfg.scales), g)]
        image, mask = rescale(image, mask, scale, cfg.rescale_interpolation)
        image, mask = class_ratio_crop(
            image, mask, cfg.crop_size, cfg.max_class_ratio, cfg.crop_retries, ignore, g
        )
        if _rand(g) < cfg.rot90_p:
            k = _randint(0 if cfg.rotate_draw == "paper" else 1, 4, g)
            if k:
                image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        if _rand(g) < cfg.hflip_p:
            image, mask = image.flip(-1), mask.flip(-1)
        if _rand(g) < cfg.vflip_p:
            image, mask = image.flip(-2), mask.flip(-2)
        if cfg.colour_jitter > 0:
            image = colour_jitter(image, cfg.colour_jitter, g)
        return image.contiguous(), mask.contiguous()

    def sample(self, load: Callable[[int], Pair], index: int, length: int) -> Pair:
        """Load raw sample ``index`` (a mosaic with three random others, with probability ``mosaic_p``), augmented."""
        g = self._random.get()
        if self.config.mosaic_p > 0 and _rand(g) < self.config.mosaic_p:
            others = [_randint(0, length, g) for _ in range(3)]
            image, mask = four_image_mosaic([load(i) for i in (index, *others)], self._ignore(), g)
        else:
            image, mask = load(index)
        return self(image, mask, generator=g)
