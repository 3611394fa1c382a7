"""The official releases of ISPRS Vaihingen, ISPRS Potsdam and LoveDA, declared as data.

Each :class:`Release` holds a dataset's :class:`~bicorseg.spec.DatasetSpec` (classes, palette, ignore
index, evaluation classes, bands, normalisation, splits) and the facts ``prepare`` needs to turn the
release into training data: where its files are (path patterns with ``{field}`` placeholders), how
its labels are encoded, which tiles form which split and how each split is cut into patches. One
code path (:mod:`bicorseg.data.release`) serves every release; nothing matches a dataset's name.

Path patterns match the end of a file's path inside the source folder or inside an archive, so the
same declaration finds ``ISPRS_semantic_labeling_Vaihingen/top/top_mosaic_09cm_area1.tif`` on disk
and ``top/top_mosaic_09cm_area1.tif`` inside the official zip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bicorseg.data.labels import Colour, LabelTable
from bicorseg.errors import ConfigError
from bicorseg.spec import IMAGENET_MEAN_8BIT, IMAGENET_STD_8BIT, RELEASE_NAMES, DatasetSpec, TTASpec

PROTOCOLS = ("clean", "paper")  # preparation protocols (see PaperPreparation)


@dataclass(frozen=True)
class SplitRule:
    """Which source images form a split, which labels it uses, and how it is cut.

    Attributes:
        name: split name in the prepared output (``train``, ``val``, ``test``).
        tiles: tile ids the protocol requires; every one must be present. Empty: the split is
            every image whose path fields match ``where`` (e.g. LoveDA's ``Train/Urban``).
        where: path field -> accepted values (only used when ``tiles`` is empty).
        labels: label role to use (``"full"`` or ``"eroded"``), or None when the split has no labels.
        patch_size: side of the square patches, or None to keep whole images.
        stride: step between patches (defaults to ``patch_size``).
        pad: pad each tile to a multiple of ``patch_size`` (image 0, mask ignore) so that no pixel
            is dropped; at the bottom and right, or where the protocol's :class:`PaperPreparation`
            puts it.
        flips: extra flipped copies of each tile, cut like the original (``"hflip"``, ``"vflip"``).
    """

    name: str
    tiles: tuple[str, ...] = ()
    where: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    labels: str | None = "full"
    patch_size: int | None = None
    stride: int | None = None
    pad: bool = True
    flips: tuple[str, ...] = ()

    def scaled(self, patch_size: int | None) -> SplitRule:
        """The same rule with another patch size; the stride keeps its ratio to the patch size."""
        if patch_size is None or self.patch_size is None:
            return self
        stride = self.stride or self.patch_size
        return replace(
            self, patch_size=patch_size, stride=max(1, round(stride * patch_size / self.patch_size))
        )

    def to_dict(self) -> dict:
        return {
            "tiles": list(self.tiles),
            "where": {k: list(v) for k, v in self.where.items()},
            "labels": self.labels,
            "patch_size": self.patch_size,
            "stride": self.stride or self.patch_size,
            "pad": self.pad,
            "flips": list(self.flips),
        }


@dataclass(frozen=True)
class BandVariant:
    """One choice of image files and bands (e.g. Potsdam RGB or IRRG) with its normalisation."""

    images: tuple[str, ...]
    bands: tuple[str, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN_8BIT
    std: tuple[float, ...] = IMAGENET_STD_8BIT


@dataclass(frozen=True)
class ZoomStep:
    """The original Vaihingen preparation's car zoom, applied to every patch of ``splits``.

    A random square crop whose side is drawn from ``crop`` (fractions of the patch side, both ends
    included, as ``int(3 * side // 8)`` .. ``int(side // 2)``) at a random position is resized to
    the patch size (image bilinear, mask nearest neighbour, as OpenCV does). When pixels of
    ``class_index`` cover more than ``min_share`` of it, the patch is replaced by four variants: the
    crop, its vertical flip, its horizontal flip and its rotation by k quarter turns with k drawn
    from {0, 1, 2, 3} (albumentations' ``RandomRotate90(p=1)``, zero included). Seeded per patch.
    """

    class_index: int
    min_share: float = 0.1
    crop: tuple[int, int] = (3, 8)  # minimal side: 3/8 of the patch (the maximum is 1/2)
    splits: tuple[str, ...] = ("train",)
    seed: int = 42

    def side_range(self, patch_size: int) -> tuple[int, int]:
        """Smallest and largest crop side for a patch size (both included)."""
        return int(self.crop[0] * patch_size // self.crop[1]), int(patch_size // 2)


@dataclass(frozen=True)
class PaperPreparation:
    """Where the original code's preparation of a release differs from bicorseg's clean protocol.

    Attributes:
        pad_label: class index of padding pixels; None: ignored, as clean. The original pads its
            colour masks with the scalar 6, which OpenCV applies to the first channel only: (6, 0, 0),
            (0, 0, 6) after its RGB-to-BGR swap. That colour matches no class, and its
            colour-to-index conversion leaves unmatched pixels at 0.
        pad_top_left: padding goes at the top and the left of a tile (clean: bottom and right). The
            original pads with albumentations' ``PadIfNeeded(position='bottom_right')``, and
            ``position`` is where the *image* is placed, so the padding lies above and to its left.
        flip_before_pad: flipped copies are flips of the unpadded tile, padded afterwards (clean:
            the padded tile is flipped, so the padding of a flipped copy changes sides).
        zoom: the car zoom step, or None.
    """

    pad_label: int | None = None
    pad_top_left: bool = False
    flip_before_pad: bool = False
    zoom: ZoomStep | None = None

    def notes(self, spec: DatasetSpec) -> list[str]:
        """The differences from the clean protocol, in words (for the manifest and reports)."""
        notes = []
        if self.pad_label is not None:
            notes.append(f"padding labelled {spec.class_names[self.pad_label]} (class {self.pad_label})")
        if self.pad_top_left:
            notes.append("padding at the top and left")
        if self.flip_before_pad:
            notes.append("flipped copies flipped before padding")
        if self.zoom is not None:
            notes.append(
                f"{spec.class_names[self.zoom.class_index]} zoom on {'+'.join(self.zoom.splits)} patches "
                f"(> {self.zoom.min_share:g} share -> 4 zoomed variants)"
            )
        return notes or ["same files as the clean protocol"]


@dataclass(frozen=True)
class Release:
    """Everything ``prepare`` knows about one official dataset release.

    Attributes:
        spec: the dataset facts (for the default band variant).
        fields: placeholder name -> regular expression of its values (``tile`` names the tile).
        variants: band variant name -> image patterns and bands; ``default_variant`` is used
            unless another is asked for.
        labels: label role (``"full"``, ``"eroded"``) -> path patterns.
        label_table: raw label code (colour or value) -> class index.
        splits: the protocol's splits, in order.
        patch_name: output name of a tile's patches, from its fields (e.g. ``area{tile}``).
        archives: names of the official archives (for messages; any zip in the source is searched).
        paper: how the original code prepared this release (``prepare(..., protocol="paper")``).
    """

    spec: DatasetSpec
    fields: Mapping[str, str]
    variants: Mapping[str, BandVariant]
    default_variant: str
    labels: Mapping[str, tuple[str, ...]]
    label_table: LabelTable
    splits: tuple[SplitRule, ...]
    patch_name: str
    archives: tuple[str, ...] = ()
    paper: PaperPreparation = PaperPreparation()

    @property
    def name(self) -> str:
        return self.spec.name

    def split(self, name: str) -> SplitRule:
        for rule in self.splits:
            if rule.name == name:
                return rule
        raise ConfigError(
            f"{self.name}: no split {name!r} (choose from {', '.join(r.name for r in self.splits)})"
        )

    def preparation(self, protocol: str) -> PaperPreparation:
        """The preparation differences of a protocol: none for ``clean``, :attr:`paper` for ``paper``."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        return self.paper if protocol == "paper" else PaperPreparation()

    def variant(self, name: str | None = None) -> tuple[str, BandVariant]:
        """The declared name and the band variant called ``name`` in any case (None: the default)."""
        key = self.default_variant if name is None else name
        for variant_name, variant in self.variants.items():
            if variant_name.lower() == key.lower():
                return variant_name, variant
        raise ConfigError(f"{self.name}: no band variant {key!r} (choose from {', '.join(self.variants)})")

    def spec_for(self, variant: str | None = None) -> DatasetSpec:
        """The dataset spec with the bands and normalisation of a band variant."""
        _, chosen = self.variant(variant)
        return self.spec.with_bands(chosen.bands, chosen.mean, chosen.std)

    def pattern(self, template: str) -> re.Pattern[str]:
        """Compile a path pattern: ``{field}`` becomes a named group, the rest is literal."""
        regex = ""
        for part in re.split(r"(\{[a-z_]+\})", template):
            if part.startswith("{") and part.endswith("}"):
                name = part[1:-1]
                if name not in self.fields:
                    raise ConfigError(f"unknown field {{{name}}} in path pattern {template!r}")
                regex += f"(?P<{name}>{self.fields[name]})"
            else:
                regex += re.escape(part)
        # A pattern matches the end of a path, starting at a folder boundary.
        return re.compile(rf"(?:^|/){regex}$")


# ------------------------------------------------------------------------------------------------ ISPRS

ISPRS_CLASSES = ("impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLOURS: tuple[Colour, ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)
ISPRS_BOUNDARY: Colour = (0, 0, 0)  # the eroded boundary of the "noBoundary" labels: ignored
ISPRS_IGNORE = 6
ISPRS_EVAL = (0, 1, 2, 3, 4)  # clutter is left out of the means, as in the published numbers
ISPRS_LABELS = LabelTable.from_colours(
    ISPRS_COLOURS, ignore_colours=[ISPRS_BOUNDARY], ignore_index=ISPRS_IGNORE
)
ISPRS_CAR = 4
ISPRS_PAPER = PaperPreparation(pad_label=0, pad_top_left=True, flip_before_pad=True)  # see PaperPreparation

# The test-time augmentation of the original publication (its test scripts), per dataset.
VAIHINGEN_PAPER_TTA = TTASpec(hflip=True, vflip=True, rotations=(0, 1), scales=(0.5, 0.75, 1.0, 1.25, 1.5),
                              merge="logits")  # fmt: skip
POTSDAM_PAPER_TTA = TTASpec(hflip=True, vflip=True, merge="logits")  # flips only, as published
LOVEDA_PAPER_TTA = TTASpec(hflip=True, scales=(0.75, 1.0, 1.25, 1.5), merge="logits")

VAIHINGEN_SPLITS = {
    "train": ("1", "3", "5", "7", "11", "13", "15", "17", "21", "23", "26", "28", "32", "34", "37"),
    "val": ("30",),
    "test": ("2", "4", "6", "8", "10", "12", "14", "16", "20", "22", "24", "27", "29", "31", "33", "35", "38"),
}  # fmt: skip

POTSDAM_SPLITS = {
    "train": (
        "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
        "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_11", "7_12",
    ),  # 7_10 is left out for its known label errors
    "val": ("2_10",),
    "test": (
        "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14",
        "6_15", "7_13",
    ),
}  # fmt: skip

VAIHINGEN_DATASET = DatasetSpec(
    name="vaihingen",
    class_names=ISPRS_CLASSES,
    palette=ISPRS_COLOURS,
    ignore_index=ISPRS_IGNORE,
    eval_classes=ISPRS_EVAL,
    # The release is IR-R-G false colour; the published recipe normalises it with ImageNet statistics.
    bands=("nir", "red", "green"),
    mean=IMAGENET_MEAN_8BIT,
    std=IMAGENET_STD_8BIT,
    splits=VAIHINGEN_SPLITS,
    label_variant="eroded",
    paper_tta=VAIHINGEN_PAPER_TTA,
)

POTSDAM_DATASET = replace(
    VAIHINGEN_DATASET,
    name="potsdam",
    bands=("red", "green", "blue"),
    splits=POTSDAM_SPLITS,
    paper_tta=POTSDAM_PAPER_TTA,
)


def _isprs_rules(splits: Mapping[str, tuple[str, ...]], train_stride: int) -> tuple[SplitRule, ...]:
    """Training tiles padded to a multiple of 1024 and cut into 1024 patches with ``train_stride``, plus
    flipped copies; validation and test tiles cut 1024 / stride 1024, against the eroded ground truth."""
    flips = ("hflip", "vflip")
    train = SplitRule(
        "train", splits["train"], labels="full", patch_size=1024, stride=train_stride, flips=flips
    )
    others = [
        SplitRule(name, splits[name], labels="eroded", patch_size=1024, stride=1024)
        for name in ("val", "test")
    ]
    return (train, *others)


VAIHINGEN = Release(
    spec=VAIHINGEN_DATASET,
    fields={"tile": r"\d+"},
    variants={"IRRG": BandVariant(images=("top/top_mosaic_09cm_area{tile}.tif",), bands=VAIHINGEN_DATASET.bands)},
    default_variant="IRRG",
    labels={
        # Full labels share the images' file names (gts_for_participants/ or the *_COMPLETE archive);
        # files already taken as images (under top/) are never taken as labels.
        "full": ("top_mosaic_09cm_area{tile}.tif",),
        "eroded": ("top_mosaic_09cm_area{tile}_noBoundary.tif",),
    },
    label_table=ISPRS_LABELS,
    splits=_isprs_rules(VAIHINGEN_SPLITS, train_stride=512),
    patch_name="top_mosaic_09cm_area{tile}",
    archives=(
        "ISPRS_semantic_labeling_Vaihingen.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
    ),
    paper=replace(ISPRS_PAPER, zoom=ZoomStep(ISPRS_CAR)),
)  # fmt: skip

POTSDAM = Release(
    spec=POTSDAM_DATASET,
    fields={"tile": r"\d+_\d+"},
    variants={
        "RGB": BandVariant(images=("top_potsdam_{tile}_RGB.tif",), bands=("red", "green", "blue")),
        "IRRG": BandVariant(images=("top_potsdam_{tile}_IRRG.tif",), bands=("nir", "red", "green")),
    },
    default_variant="RGB",
    labels={
        "full": ("top_potsdam_{tile}_label.tif",),
        "eroded": ("top_potsdam_{tile}_label_noBoundary.tif",),
    },
    label_table=ISPRS_LABELS,
    splits=_isprs_rules(POTSDAM_SPLITS, train_stride=1024),
    patch_name="top_potsdam_{tile}",
    archives=("2_Ortho_RGB.zip", "3_Ortho_IRRG.zip", "5_Labels_all.zip", "5_Labels_all_noBoundary.zip"),
    paper=ISPRS_PAPER,  # no car zoom in its tool
)  # fmt: skip

# ----------------------------------------------------------------------------------------------- LoveDA

LOVEDA_DATASET = DatasetSpec(
    name="loveda",
    class_names=("background", "building", "road", "water", "barren", "forest", "agriculture"),
    palette=(
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    ),
    ignore_index=7,
    eval_classes=(0, 1, 2, 3, 4, 5, 6),
    bands=("red", "green", "blue"),
    mean=IMAGENET_MEAN_8BIT,
    std=IMAGENET_STD_8BIT,
    splits={},  # images are found by folder (Train/Val/Test x Urban/Rural), not listed
    label_variant="full",
    paper_tta=LOVEDA_PAPER_TTA,
)

LOVEDA_DOMAINS = ("Urban", "Rural")

LOVEDA = Release(
    spec=LOVEDA_DATASET,
    fields={"part": "Train|Val|Test", "domain": "Urban|Rural", "tile": r"\d+"},
    variants={
        "RGB": BandVariant(images=("{part}/{domain}/images_png/{tile}.png",), bands=LOVEDA_DATASET.bands)
    },
    default_variant="RGB",
    labels={"full": ("{part}/{domain}/masks_png/{tile}.png",)},
    # Raw 0 is no-data (ignored); 1..7 are the classes 0..6.
    label_table=LabelTable.from_value_list(range(1, 8), ignore_values=[0]),
    splits=(
        SplitRule("train", where={"part": ("Train",), "domain": LOVEDA_DOMAINS}, labels="full"),
        SplitRule("val", where={"part": ("Val",), "domain": LOVEDA_DOMAINS}, labels="full"),
        # The test split is scored on the official server: images only, names kept for submission.
        SplitRule("test", where={"part": ("Test",), "domain": LOVEDA_DOMAINS}, labels=None),
    ),
    patch_name="{tile}",
    archives=("Train.zip", "Val.zip", "Test.zip"),
)

# Registered under the names every command offers (bicorseg.spec.RELEASE_NAMES, in that order).
DATASETS: dict[str, Release] = {
    name: release for name, release in zip(RELEASE_NAMES, (VAIHINGEN, POTSDAM, LOVEDA), strict=True)
}


def get_release(name: str) -> Release:
    """The release declaration registered under ``name``."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})") from None


def get_spec(name: str, variant: str | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered dataset (optionally for another band variant)."""
    return get_release(name).spec_for(variant)
