"""Dataset facts as data: class names, palette, ignore index, evaluation classes, bands, normalisation.

Also the facts every command shares about datasets: the names of the declared releases and of the
dataset kinds (:data:`RELEASE_NAMES`, :data:`DATASET_KINDS`), and the normalisation maths itself
(:func:`normalise`, :func:`denormalise`), so that every reader of pixels computes the model input
the same way.

The facts include how the training masks encoded the classes (:class:`LabelEncoding`: class
indices, raw values or colours), so that masks of the same kind are decoded the same way later.

A :class:`DatasetSpec` is declared once per dataset (see :mod:`bicorseg.data.datasets`) and travels
inside every checkpoint, so that prediction needs nothing but the checkpoint and the input. Nothing in
bicorseg decides a convention by matching a dataset's name: it reads these fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bicorseg import typedconfig
from bicorseg.errors import BicorsegError, ConfigError

# ImageNet statistics in 8-bit units (the normalisation of the published recipes).
IMAGENET_MEAN_8BIT = (123.675, 116.28, 103.53)
IMAGENET_STD_8BIT = (58.395, 57.12, 57.375)
# the normalisation statistics a band can have, in its raw units: below MIN_STD the normalised values
# explode (a constant band has no std to divide by); beyond MAX_STATISTIC no sensor's values reach
MIN_STD = 1e-6
MAX_STATISTIC = 1e12

LABEL_KINDS = ("index", "values", "colours")
MAX_CLASS_NAME = 100  # characters


def check_class_names(
    names: Sequence[Any], where: str, error: type[BicorsegError] = ConfigError
) -> tuple[str, ...]:
    """The one rule for class names, wherever they come from (dataset specs and checkpoints, class
    tables, the tags of class rasters): each a string of 1 to ``MAX_CLASS_NAME`` printable
    characters, all different. Control and format characters are refused (they would move a
    terminal's cursor, make an XML style unreadable or hide text); everything printable is a valid
    name and is escaped where it is printed or written (rich markup in tables, XML, HTML, CSV).
    Raises ``error`` (one line naming ``where`` and the class) or returns the names as a tuple.
    """
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise error(f"{where}: class {index} has the name {name!r}, not a string")
        if not name or len(name) > MAX_CLASS_NAME:
            raise error(f"{where}: class {index}: a class name has 1 to {MAX_CLASS_NAME} characters, "
                        f"got {len(name)}")  # fmt: skip
        if not name.isprintable():
            raise error(
                f"{where}: class {index} has the name {name[:MAX_CLASS_NAME]!r}, with a control or "
                "format character: class names are printable text"
            )
    if len(set(names)) != len(names):
        twice = next(name for i, name in enumerate(names) if name in names[:i])
        raise error(f"{where}: the class name {twice!r} is given twice: class names must be unique")
    return tuple(names)


# The official releases declared in bicorseg.data.datasets, and every kind of dataset the commands
# take (``folder``: a custom folder dataset; ``geo``: georeferenced rasters with label polygons or
# label rasters; ``synthetic``: procedural samples for smoke tests).
RELEASE_NAMES = ("vaihingen", "potsdam", "loveda")
DATASET_KINDS = (*RELEASE_NAMES, "folder", "geo", "synthetic")


def _per_band(like: Any, values: Sequence[float] | Any) -> Any:
    """``values`` (one per band) shaped ``bands x 1 x 1``, of the type and dtype of ``like`` (array or tensor)."""
    shape = (-1, 1, 1)
    if hasattr(like, "new_tensor"):  # a torch tensor: same dtype and device
        tensor = values.to(like) if hasattr(values, "new_tensor") else like.new_tensor(values)
        return tensor.reshape(shape)
    import numpy as np

    return np.asarray(values, dtype=like.dtype).reshape(shape)


def normalise(image: Any, mean: Sequence[float] | Any, std: Sequence[float] | Any) -> Any:
    """The model input of raw pixels: ``(image - mean) / std`` per band.

    ``image`` is a floating-point numpy array or torch tensor ``bands x H x W`` (or a batch of them);
    ``mean`` and ``std`` hold one value per band in the raw units of the input
    (:attr:`DatasetSpec.mean`, :attr:`DatasetSpec.std`).
    """
    return (image - _per_band(image, mean)) / _per_band(image, std)


def denormalise(image: Any, mean: Sequence[float] | Any, std: Sequence[float] | Any) -> Any:
    """The raw pixels of a model input: ``image * std + mean`` per band (the inverse of :func:`normalise`)."""
    return image * _per_band(image, std) + _per_band(image, mean)


@dataclass(frozen=True)
class LabelEncoding:
    """How masks encode the classes (the decoder is :meth:`bicorseg.data.LabelTable.for_spec`).

    Attributes:
        kind: ``"index"`` (masks hold the class indices and the ignore index), ``"values"`` (one raw
            integer per class, e.g. LoveDA's 1..7) or ``"colours"`` (one RGB colour per class).
        classes: the raw value or ``(r, g, b)`` colour of each class, in class-index order
            (empty for ``"index"``).
        ignore: raw values or colours that mean "not labelled" (empty for ``"index"``).
    """

    kind: str = "index"
    classes: tuple[int | tuple[int, int, int], ...] = ()
    ignore: tuple[int | tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        typedconfig.check_choice("kind", self.kind, LABEL_KINDS)
        if self.kind == "index":
            if self.classes or self.ignore:
                raise ConfigError("an 'index' label encoding lists no values or colours")
            return
        codes = [*self.classes, *self.ignore]
        if self.kind == "values":
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
                raise ConfigError("a 'values' label encoding lists integers")
        elif not all(
            isinstance(c, tuple) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in codes
        ):
            raise ConfigError("a 'colours' label encoding lists (r, g, b) colours in 0..255")
        if len(set(codes)) != len(codes):
            raise ConfigError("a label encoding lists a value or colour twice")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything a model needs to know about the data it is trained on or applied to.

    Attributes:
        name: short identifier, e.g. ``"vaihingen"`` (informational only).
        class_names: one name per class index ``0..N-1``.
        palette: one RGB colour per class, used for colour maps and colour-coded labels.
        ignore_index: label value that is skipped by losses and metrics.
        eval_classes: indices averaged into mIoU and mean F1 (e.g. ISPRS leaves out clutter).
        bands: names of the input bands in the order the model expects them.
        mean, std: per-band normalisation in the raw units of the input (``(x - mean) / std``).
        splits: optional mapping split name -> list of tile / image identifiers.
        label_variant: which labels the evaluation protocol uses (e.g. ``"eroded"``), reported.
        label_encoding: how the masks the model was trained on encode the classes (masks of
            prepared datasets hold class indices; a folder dataset's class table may list values or
            colours).
        paper_tta: the test-time augmentation the original publication used for this dataset
            (TTA mode ``paper``), or None when there is none.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    eval_classes: tuple[int, ...]
    bands: tuple[str, ...] = ("red", "green", "blue")
    mean: tuple[float, ...] = IMAGENET_MEAN_8BIT
    std: tuple[float, ...] = IMAGENET_STD_8BIT
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_variant: str = "full"
    label_encoding: LabelEncoding = LabelEncoding()
    paper_tta: TTASpec | None = None

    def __post_init__(self) -> None:
        check_class_names(self.class_names, f"dataset {self.name!r}")
        n = len(self.class_names)
        if n < 2:
            raise ConfigError(f"dataset {self.name!r}: at least 2 classes are needed, got {n}")
        if len(self.palette) != n:
            raise ConfigError(f"dataset {self.name!r}: {n} classes but {len(self.palette)} palette colours")
        if 0 <= self.ignore_index < n:
            raise ConfigError(
                f"dataset {self.name!r}: ignore_index {self.ignore_index} collides with a class index"
            )
        bad = [c for c in self.eval_classes if not 0 <= c < n]
        if bad or not self.eval_classes:
            raise ConfigError(f"dataset {self.name!r}: eval_classes must be class indices in 0..{n - 1}")
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise ConfigError(
                f"dataset {self.name!r}: bands, mean and std must have the same length "
                f"({len(self.bands)}, {len(self.mean)}, {len(self.std)})"
            )
        for band, (m, s) in enumerate(zip(self.mean, self.std), start=1):  # statistics no band can have
            where = f"dataset {self.name!r}: band {band} has"
            if not (math.isfinite(m) and math.isfinite(s)):
                raise ConfigError(f"{where} mean {m!r} and std {s!r}: both must be finite")
            if s < MIN_STD:  # the normalised values would explode
                raise ConfigError(f"{where} std {s!r}: it must be at least {MIN_STD:g}")
            if max(abs(m), s) > MAX_STATISTIC:
                raise ConfigError(
                    f"{where} mean {m!r} and std {s!r}: no band's values reach {MAX_STATISTIC:g}"
                )
        encoding = self.label_encoding
        if encoding.kind != "index" and len(encoding.classes) != n:
            raise ConfigError(
                f"dataset {self.name!r}: {n} classes but the label encoding lists {len(encoding.classes)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def to_dict(self) -> dict[str, Any]:
        """The facts as plain data (tuples as lists), as JSON and YAML hold them."""
        return typedconfig.to_plain(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        """The spec :meth:`to_dict` wrote, checked; every key is required (a :class:`ConfigError` names it)."""
        return typedconfig.build(cls, data, complete=True)  # type: ignore[no-any-return]

    def with_bands(self, bands: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> DatasetSpec:
        """A copy for another band selection (e.g. Potsdam RGBIR instead of RGB)."""
        data = self.to_dict()
        data.update(bands=list(bands), mean=list(mean), std=list(std))
        return DatasetSpec.from_dict(data)


# The test-time augmentation modes (applied in bicorseg.inference.tta) and how passes are merged.
TTA_MODES = ("none", "lr", "d4", "paper")
TTA_MERGES = ("logits", "probs")


@dataclass(frozen=True)
class TTASpec:
    """A test-time augmentation as data: every combination of its flips, quarter turns and scales.

    The passes are the product ``hflip x vflip x rotations x scales`` (a flip that is off contributes
    only the identity). Applied in :mod:`bicorseg.inference.tta`.

    Attributes:
        hflip, vflip: include horizontally / vertically flipped passes.
        rotations: quarter turns (counter-clockwise) to include, each in 0..3.
        scales: input scale factors (the input is resized, the logits resized back).
        merge: ``"logits"`` (average the logits, then softmax) or ``"probs"`` (average the softmax).
    """

    hflip: bool = False
    vflip: bool = False
    rotations: tuple[int, ...] = (0,)
    scales: tuple[float, ...] = (1.0,)
    merge: str = "probs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotations", tuple(int(k) for k in self.rotations))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.rotations or any(not 0 <= k <= 3 for k in self.rotations):
            raise ConfigError(f"TTA rotations must be quarter turns in 0..3, got {self.rotations}")
        if len(set(self.rotations)) != len(self.rotations) or len(set(self.scales)) != len(self.scales):
            raise ConfigError("TTA rotations and scales must not repeat")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise ConfigError(f"TTA scales must be positive, got {self.scales}")
        typedconfig.check_choice("merge", self.merge, TTA_MERGES)

    @property
    def num_passes(self) -> int:
        return (1 + self.hflip) * (1 + self.vflip) * len(self.rotations) * len(self.scales)
