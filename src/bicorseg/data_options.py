"""The options of the data pipeline as plain dataclasses (no torch): the training augmentation and the
layout of a folder dataset. Training configs hold them as sections (``data.augment``, ``data.options``);
the data package applies them (:mod:`bicorseg.data.transforms`, :class:`bicorseg.data.FolderDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bicorseg.errors import ConfigError
from bicorseg.typedconfig import check_choice

ROTATE_DRAWS = ("clean", "paper")
RESCALE_INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True, kw_only=True)
class AugmentOptions:
    """The training augmentation (docs/METHOD.md, section 6); the defaults are the published recipes'.

    Attributes:
        scales: the random rescale factors, one drawn per sample.
        max_class_ratio: a crop is drawn again while one class covers this share of its labelled pixels.
        crop_retries: how often a crop is drawn again (the last one is kept).
        rot90_p: probability of a quarter-turn rotation.
        hflip_p: probability of a horizontal flip.
        vflip_p: probability of a vertical flip.
        mosaic_p: probability that a sample is a mosaic of four.
        flip_p: sets both flip probabilities (null: as they are).
        rotate_draw: ``clean`` (90, 180 or 270 degrees) or ``paper`` (the original code's draw of 0
            to 3 quarter turns after the probability test: 0.75 ``rot90_p`` of the samples rotated).
        rescale_interpolation: ``bilinear`` (antialiased) or ``bicubic`` (the original's 8-bit Pillow resize).
        colour_jitter: ``j`` > 0 scales each band by a factor from ``[1 - j, 1 + j]`` and stretches its
            contrast around its mean by another (0, the published recipes: none): scenes differ in
            light and sensor balance, and a model trained on a few learns their colours otherwise.
    """

    scales: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    max_class_ratio: float = 0.75
    crop_retries: int = 10
    rot90_p: float = 0.5
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    mosaic_p: float = 0.25
    flip_p: float | None = None
    rotate_draw: str = "clean"
    rescale_interpolation: str = "bilinear"
    colour_jitter: float = 0.0

    def __post_init__(self) -> None:
        # a shared flip probability sets both: the stored config stays explicit
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.flip_p is not None:
            object.__setattr__(self, "hflip_p", float(self.flip_p))
            object.__setattr__(self, "vflip_p", float(self.flip_p))
            object.__setattr__(self, "flip_p", None)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"must be positive factors, not {list(self.scales)}", key="scales")
        for name in ("rot90_p", "hflip_p", "vflip_p", "mosaic_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"must be a probability in [0, 1], not {getattr(self, name)}", key=name)
        if not 0.0 < self.max_class_ratio <= 1.0:
            raise ConfigError(f"must be in (0, 1], not {self.max_class_ratio}", key="max_class_ratio")
        if not 0.0 <= self.colour_jitter < 1.0:
            raise ConfigError(f"must be in [0, 1), not {self.colour_jitter}", key="colour_jitter")
        if self.crop_retries < 0:
            raise ConfigError(f"must not be negative, not {self.crop_retries}", key="crop_retries")
        check_choice("rotate_draw", self.rotate_draw, ROTATE_DRAWS)
        check_choice("rescale_interpolation", self.rescale_interpolation, RESCALE_INTERPOLATIONS)

    @property
    def rotation_rate(self) -> float:
        """The share of samples that end up rotated (0.75 ``rot90_p`` under ``rotate_draw: paper``)."""
        return self.rot90_p * (0.75 if self.rotate_draw == "paper" else 1.0)


# ``data.augment: false``: a plain random crop
ONLY_CROP = AugmentOptions(scales=(1.0,), crop_retries=0, rot90_p=0.0, flip_p=0.0, mosaic_p=0.0)


@dataclass(frozen=True)
class FolderOptions:
    """Where a folder dataset keeps its images and masks (docs/training.md).

    Attributes:
        images: the name of the image folders (at any depth below the root).
        masks: the name of the mask folders beside them.
        mask_suffix: appended to an image's stem to name its mask (e.g. ``_mask``).
        splits: sub-folders of the root that make each split (``{train: [a, b], val: [c]}``); null:
            the split is the sub-folder of its name, ``all`` the whole root.
    """

    images: str = "images"
    masks: str = "masks"
    mask_suffix: str = ""
    splits: dict[str, list[str]] | None = None
