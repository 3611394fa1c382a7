"""Training augmentation: joint, seeded, labels never interpolated, class-ratio crop, mosaic, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from bicorseg.data import AugmentConfig, SegmentationDataset
from bicorseg.data.transforms import TrainTransform, class_ratio_crop, resize_mask
from bicorseg.errors import ConfigError
from bicorseg.spec import DatasetSpec

TOY_DATASET = DatasetSpec("toy", ("a", "b", "c"), ((0, 0, 0), (9, 9, 9), (99, 99, 99)), 3, (0, 1, 2))


class ArrayDataset(SegmentationDataset):
    """Samples held in memory (uint8 images, index masks)."""

    def __init__(self, pairs, spec=TOY_DATASET, transform=None):
        super().__init__(spec, transform)
        self.pairs = pairs
        self.loads = 0

    def __len__(self):
        return len(self.pairs)

    def load_arrays(self, index):
        self.loads += 1
        return self.pairs[index]

    def sample_name(self, index):
        return f"s{index}"


def _pair(height=60, width=80, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 3, (height // 10, width // 10), dtype=np.uint8).repeat(10, 0).repeat(10, 1)
    image = np.stack([mask * 40, mask * 40 + 1, rng.integers(0, 255, mask.shape, dtype=np.uint8)]).astype(
        np.uint8
    )
    return image, mask


def build_train_transform(crop_size, **options):
    return TrainTransform(AugmentConfig(crop_size, **options))


def _tensors(pair):
    image, mask = pair
    return torch.from_numpy(image.astype(np.float32)), torch.from_numpy(mask.astype(np.int64))


def test_seeded_and_reproducible():
    image, mask = _tensors(_pair())
    runs = []
    for seed in (7, 7, 8):
        transform = build_train_transform(32, ignore_index=3, seed=seed)
        runs.append([transform(image, mask) for _ in range(6)])
    for (a_img, a_mask), (b_img, b_mask) in zip(runs[0], runs[1]):
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert any(not torch.equal(a[1], c[1]) for a, c in zip(runs[0], runs[2]))
    for out_image, out_mask in runs[0]:
        assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32) and out_mask.dtype == torch.int64


def test_labels_are_never_interpolated():
    image, mask = _tensors(_pair(63, 77))
    mask[5:9, 5:9] = 3
    transform = build_train_transform(40, scales=(0.75, 1.25, 1.5), ignore_index=3, seed=1, mosaic_p=0)
    for _ in range(20):
        _, out = transform(image, mask)
        assert set(out.unique().tolist()) <= {0, 1, 2, 3}
    up = resize_mask(torch.tensor([[1, 2], [3, 4]]), (4, 4))
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert resize_mask(up, (2, 2)).tolist() == [[1, 2], [3, 4]]


def test_image_and_mask_move_together():
    image, mask = _tensors(_pair(40, 40))
    transform = TrainTransform(AugmentConfig(40, scales=(1.0,), rot90_p=1.0, hflip_p=1.0, vflip_p=0.5,
                                             mosaic_p=0.0, ignore_index=3, seed=3))  # fmt: skip
    changed = 0
    for _ in range(8):
        out_image, out_mask = transform(image, mask)
        assert torch.equal(out_image[0], out_mask.float() * 40) and torch.equal(
            out_image[1], out_image[0] + 1
        )
        changed += not torch.equal(out_mask, mask)  # (rot180 + both flips is the identity)
    assert changed >= 4


def test_small_images_are_padded_with_ignore():
    image, mask = _tensors(_pair(20, 30))
    out_image, out_mask = build_train_transform(64, scales=(1.0,), rot90_p=0, flip_p=0, ignore_index=3)(
        image, mask
    )
    assert out_mask.shape == (64, 64)
    assert bool((out_mask[20:] == 3).all()) and bool((out_mask[:, 30:] == 3).all())
    assert float(out_image[:, 20:].abs().sum()) == 0.0


def test_class_ratio_crop_retries_towards_mixed_crops():
    mask = torch.zeros(200, 200, dtype=torch.int64)
    mask[:100, :100] = 1
    image = torch.zeros(3, 200, 200)

    def mixed(retries):
        count = 0
        for seed in range(40):
            _, crop = class_ratio_crop(image, mask, 64, 0.75, retries, 3, torch.Generator().manual_seed(seed))
            share = float((crop == 1).float().mean())
            count += 0.25 < share < 0.75
        return count

    assert mixed(10) >= 30 > 20 > mixed(0)


def test_mosaic_quarters_come_from_four_samples():
    pairs = [(np.full((3, 40, 40), 10 * k, np.uint8), np.full((40, 40), k % 3, np.uint8)) for k in range(4)]
    transform = build_train_transform(40, scales=(1.0,), rot90_p=0, flip_p=0, mosaic_p=1.0, seed=5)
    dataset = ArrayDataset(pairs, transform=transform)
    sample = dataset[0]
    assert dataset.loads == 4 and sample["image"].shape == (3, 40, 40)
    raw = sample["image"] * torch.tensor(TOY_DATASET.std).view(3, 1, 1) + torch.tensor(TOY_DATASET.mean).view(
        3, 1, 1
    )
    top_left = raw[0, 0, 0].round()
    assert top_left == 0  # the quarter at the top left is the sample itself
    assert len(raw[0].round().unique()) >= 2  # and the others come from other samples
    assert ArrayDataset(pairs, transform=build_train_transform(40, mosaic_p=0.0))[0]["mask"].shape == (40, 40)


def test_workers_draw_different_but_reproducible_augmentations():
    pairs = [_pair(64, 64, seed=0)] * 4
    dataset = ArrayDataset(pairs, transform=build_train_transform(32, seed=2, mosaic_p=0.0))

    def run():
        torch.manual_seed(123)
        loader = DataLoader(dataset, batch_size=1, num_workers=2, shuffle=False)
        return [batch["mask"][0] for batch in loader]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # Items 0 and 1 (same pixels) go to different workers: they must not be augmented alike.
    assert not all(torch.equal(first[0], m) for m in first[1:])


def test_config_validation():
    with pytest.raises(ConfigError, match="crop_size"):
        AugmentConfig(0)
    with pytest.raises(ConfigError, match="mosaic_p"):
        AugmentConfig(32, mosaic_p=2)
    assert AugmentConfig(32, flip_p=0.2, scales=[1, 2]).hflip_p == 0.2
    assert AugmentConfig(32, scales=[1, 2]).scales == (1.0, 2.0)
    with pytest.raises(ConfigError, match="ignore_index is unknown"):
        build_train_transform(32)(*_tensors(_pair()))


# ------------------------------------------------------------------------------- the paper's draws


def _rotation_counts(draw: str, p: float, n: int = 20000) -> np.ndarray:
    """How often each number of quarter turns comes out of ``n`` augmentations of a 2 x 2 image."""
    cfg = AugmentConfig(2, scales=(1.0,), crop_retries=0, rot90_p=p, hflip_p=0, vflip_p=0, mosaic_p=0,
                        ignore_index=9, rotate_draw=draw)  # fmt: skip
    transform = TrainTransform(cfg)
    image = torch.arange(4.0).reshape(1, 2, 2)
    mask = torch.zeros(2, 2, dtype=torch.int64)
    turned = [torch.rot90(image, k, (-2, -1)) for k in range(4)]
    g = torch.Generator().manual_seed(123)
    counts = np.zeros(4, int)
    for _ in range(n):
        out, _ = transform(image, mask, generator=g)
        counts[next(k for k in range(4) if torch.equal(out, turned[k]))] += 1
    return counts


@pytest.mark.parametrize(
    "draw, p, rate",
    [("clean", 0.5, 0.5), ("paper", 0.5, 0.375), ("paper", 0.25, 0.1875), ("clean", 0.25, 0.25)],
)
@pytest.mark.slow
def test_rotation_rates(draw: str, p: float, rate: float) -> None:
    n = 20000
    counts = _rotation_counts(draw, p, n)
    tolerance = 5 * np.sqrt(rate * (1 - rate) / n)  # 5 binomial standard deviations
    assert abs(counts[1:].sum() / n - rate) < tolerance
    for k in (1, 2, 3):  # the three real rotations are equally likely either way
        assert abs(counts[k] / n - rate / 3) < 5 * np.sqrt(rate / 3 * (1 - rate / 3) / n)
    assert AugmentConfig(8, rot90_p=p, rotate_draw=draw).rotation_rate == pytest.approx(rate)


def test_bicubic_rescale_gives_the_pixels_of_pillow_on_8_bit_images() -> None:
    from PIL import Image

    from bicorseg.data.transforms import rescale

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # noise: bicubic overshoots, Pillow clips
    labels = rng.integers(0, 6, (48, 64), dtype=np.uint8)
    image = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))
    for scale in (0.75, 1.25, 1.5):
        size = (int(64 * scale), int(48 * scale))  # the original's int() sizes, Pillow's (width, height)
        expected = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC)).transpose(2, 0, 1)
        expected_mask = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST))
        out, out_mask = rescale(image, torch.from_numpy(labels.astype(np.int64)), scale, "bicubic")
        np.testing.assert_array_equal(out.numpy(), expected)
        np.testing.assert_array_equal(out_mask.numpy(), expected_mask)
    bilinear, _ = rescale(image, torch.from_numpy(labels.astype(np.int64)), 1.25, "bilinear")
    assert bilinear.shape[-2:] == (60, 80) and not torch.equal(
        bilinear, torch.from_numpy(expected.astype(np.float32))
    )
    with pytest.raises(ConfigError, match="rescale_interpolation"):
        AugmentConfig(8, rescale_interpolation="nearest")
    with pytest.raises(ConfigError, match="rotate_draw"):
        AugmentConfig(8, rotate_draw="albumentations")


def test_mask_resize_takes_pixel_centres_exactly():
    # target pixel 20 of 41 has its centre exactly on the border of the two source pixels: the rule
    # floor((i + 0.5) * 2 / 41) gives 1; torchvision's NEAREST_EXACT (float32 scale) gives 0
    mask = torch.tensor([[0], [1]])
    assert resize_mask(mask, (41, 1))[20, 0] == 1
    exact = TF.resize(mask[None], [41, 1], interpolation=InterpolationMode.NEAREST_EXACT)[0]
    assert exact[20, 0] == 0
    assert torch.equal(resize_mask(mask, (41, 1))[:20], exact[:20])


def test_colour_jitter_changes_each_band_within_its_range_and_leaves_labels() -> None:
    image, mask = _tensors(_pair())
    plain = build_train_transform(40, ignore_index=3, colour_jitter=0.0)
    jittered = build_train_transform(40, ignore_index=3, colour_jitter=0.3)
    g, h = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    same_image, same_mask = plain(image, mask, generator=g)
    out_image, out_mask = jittered(image, mask, generator=h)
    assert torch.equal(out_mask, same_mask)  # the geometry draws come first: the same crop and turns
    mean = same_image.mean(dim=(-2, -1))
    gain = out_image.mean(dim=(-2, -1)) / mean  # the contrast keeps the mean: the gain is left
    assert torch.all((gain >= 0.7 - 1e-5) & (gain <= 1.3 + 1e-5)) and not torch.allclose(gain, torch.ones(3))
    spread = out_image.std(dim=(-2, -1)) / (same_image.std(dim=(-2, -1)) * gain)
    assert torch.all((spread >= 0.7 - 1e-4) & (spread <= 1.3 + 1e-4)) and len(set(spread.tolist())) == 3
    with pytest.raises(ConfigError, match=r"colour_jitter: must be in \[0, 1\), not 1\.5"):
        AugmentConfig(40, colour_jitter=1.5)
