"""Custom labelled imagery: a folder of images and masks, with an optional YAML class table.

Layout: any folder named ``images`` (option ``images=``) with a sibling ``masks`` (``masks=``),
found anywhere under the root, e.g. ``root/images/a.tif`` + ``root/masks/a.png`` or, as in the
Dubai samples, ``root/Tile 1/images/image_part_001.jpg`` + ``root/Tile 1/masks/image_part_001.png``.
An image and its mask share their path below these folders and their stem (plus ``mask_suffix``),
not necessarily their extension. Images: PNG, JPEG or GeoTIFF, any band count, 8 or 16 bit.

Masks are either index images (values ``0..N-1`` and the ignore index: give ``spec=``) or images
decoded by a class table (:class:`ClassTableFile`; its YAML form is shown in docs/training.md, "Your
own data"): by colour (``colour:`` per class, ``ignore_colours``) or by raw value (``value:`` per
class, ``ignore_values``). A spec made from a class table records its values or colours
(``spec.label_encoding``), so a spec alone decodes the same masks again.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bicorseg import typedconfig
from bicorseg.data.base import SegmentationDataset
from bicorseg.data.io import default_normalisation, image_files, read_image, read_mask
from bicorseg.data.labels import LabelTable, parse_colour
from bicorseg.data.transforms import TrainTransform
from bicorseg.defaults import IMAGE_SUFFIXES, colour_hex, default_palette
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import DatasetSpec, check_class_names
from bicorseg.text_files import read_yaml_mapping

# when several masks share an image's stem, the first of these (others after them)
_MASK_SUFFIX_ORDER = {".png": 0, ".tif": 1, ".tiff": 2, ".jpg": 3, ".jpeg": 4}


@dataclass
class ClassEntry:
    """One class of a class table.

    Attributes:
        name: the class name.
        colour: its colour in colour masks (``"#3C1098"`` or ``[60, 16, 152]``).
        value: its value in index masks.
    """

    name: str
    colour: str | list[int] | None = None
    value: int | None = None


@dataclass
class ClassTableFile:
    """A class table as written in YAML (see the module docstring).

    Attributes:
        classes: the classes in class-index order (at least two).
        name: the dataset's name (default: the file's stem).
        ignore_colours: mask colours that mean "no label".
        ignore_values: mask values that mean "no label".
        ignore_index: the label of unlabelled pixels (default: the number of classes).
        eval_classes: the classes averaged into the means, by name or index (default: all).
        bands, mean, std: the band names and their normalisation in input units (together, or none).
    """

    classes: list[ClassEntry]
    name: str | None = None
    ignore_colours: list[str | list[int]] = field(default_factory=list)
    ignore_values: list[int] = field(default_factory=list)
    ignore_index: int | None = None
    eval_classes: list[int | str] | None = None
    bands: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ConfigError("must list at least two classes", key="classes")


@dataclass(frozen=True)
class ClassTable:
    """Classes of a custom dataset and how its masks encode them."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    labels: LabelTable
    eval_classes: tuple[int, ...]
    bands: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = "<class table>"

    @property
    def ignore_index(self) -> int:
        return self.labels.ignore_index

    @classmethod
    def load(
        cls, value: str | os.PathLike | Mapping[str, Any] | ClassTable | None, where: str = "<class table>"
    ) -> ClassTable | None:
        """A class table given as a YAML file, a mapping (named ``where`` in messages) or itself; None for None."""
        if value is None or isinstance(value, ClassTable):
            return value
        return cls.from_dict(value, where) if isinstance(value, Mapping) else cls.from_yaml(value)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> ClassTable:
        path = Path(path).expanduser()
        data = read_yaml_mapping(path, "class table")
        return cls.from_dict(data, str(path), default_name=path.stem)

    @classmethod
    def from_dict(cls, data: Any, where: str = "<class table>", default_name: str = "custom") -> ClassTable:
        try:
            file = typedconfig.build(ClassTableFile, data)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        names = [entry.name for entry in file.classes]
        check_class_names(names, where)
        n = len(names)
        colours = [
            parse_colour(e.colour, f"{where}: classes[{i}].colour")
            for i, e in enumerate(file.classes)
            if e.colour is not None
        ]
        values = [e.value for e in file.classes if e.value is not None]
        if values and len(values) != n:
            raise ConfigError(f"{where}: give a 'value' for every class or for none")
        if not values and len(colours) != n:
            raise ConfigError(
                f"{where}: every class needs a 'colour' (colour masks) or a 'value' (index masks)"
            )
        try:
            if values:
                labels = LabelTable.from_value_list(values, file.ignore_values, file.ignore_index)
            else:
                parsed = [parse_colour(c, f"{where}: ignore_colours") for c in file.ignore_colours]
                labels = LabelTable.from_colours(colours, parsed, file.ignore_index)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from error
        palette = tuple(colours) if len(colours) == n else default_palette(n)
        eval_classes = _eval_classes(file.eval_classes, names, where)
        statistics = (file.bands, file.mean, file.std)
        if any(v is not None for v in statistics):
            if not all(statistics) or len({len(v or ()) for v in statistics}) != 1:
                raise ConfigError(f"{where}: 'bands', 'mean' and 'std' go together, as lists of equal length")
            for i, value in enumerate(file.std or ()):
                if value <= 0:
                    raise ConfigError(f"{where}: std[{i}]: must be positive, got {value!r}")
        return cls(file.name or default_name, tuple(names), palette, labels, eval_classes,
                   *(tuple(v) if v else None for v in statistics), where)  # type: ignore[arg-type]  # fmt: skip

    def spec(self, bands: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> DatasetSpec:
        try:
            return DatasetSpec(
                name=self.name, class_names=self.class_names, palette=self.palette,
                ignore_index=self.ignore_index, eval_classes=self.eval_classes,
                bands=tuple(bands), mean=tuple(mean), std=tuple(std), label_encoding=self.labels.encoding(),
            )  # fmt: skip
        except ConfigError as error:
            raise ConfigError(f"{self.source}: {error}") from error


def class_table_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The class table (as :meth:`ClassTable.from_dict` reads it) of a spec: its classes, colours, how
    masks encode them (values or colours, class indices when the spec records neither), evaluation
    classes, bands and statistics. ``ClassTable.from_dict(class_table_dict(spec)).spec(spec.bands,
    spec.mean, spec.std)`` gives the spec back, less its splits, label variant and paper TTA."""
    encoding = spec.label_encoding
    classes: list[dict[str, Any]] = []
    for i, name in enumerate(spec.class_names):
        entry: dict[str, Any] = {"name": name}
        if encoding.kind != "colours":
            entry["value"] = encoding.classes[i] if encoding.kind == "values" else i
        entry["colour"] = colour_hex(spec.palette[i])
        classes.append(entry)
    table: dict[str, Any] = {"name": spec.name, "classes": classes}
    if encoding.kind == "colours":
        table["ignore_colours"] = [colour_hex(c) for c in encoding.ignore]
    else:
        table["ignore_values"] = list(encoding.ignore) if encoding.kind == "values" else [spec.ignore_index]
    table["ignore_index"] = spec.ignore_index
    table["eval_classes"] = [spec.class_names[i] for i in spec.eval_classes]
    table.update(bands=list(spec.bands), mean=list(spec.mean), std=list(spec.std))
    return table


def class_table_yaml(spec: DatasetSpec, comment: str) -> str:
    """The text of a class table file (:func:`class_table_dict`), under a comment that says what it is."""
    return f"# {comment}\n" + typedconfig.to_yaml(class_table_dict(spec))


def _eval_classes(value: Any, names: list[str], where: str) -> tuple[int, ...]:
    if value is None:
        return tuple(range(len(names)))
    if not value:  # a list of names or integers, as ClassTableFile says
        raise ConfigError(f"{where}: eval_classes must be a non-empty list of class names or indices")
    out = []
    for v in value:
        if isinstance(v, int) and 0 <= v < len(names):
            out.append(v)
        elif isinstance(v, str) and v in names:
            out.append(names.index(v))
        else:
            raise ConfigError(f"{where}: eval_classes: {v!r} is not a class")
    return tuple(out)


def find_pairs(
    root: str | os.PathLike,
    images: str = "images",
    masks: str = "masks",
    *,
    mask_suffix: str = "",
    require_masks: bool = True,
) -> list[tuple[Path, Path | None]]:
    """Image/mask pairs under ``root`` (see the module docstring); errors name what is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: folder does not exist")
    image_dirs = sorted(
        {d for d in root.rglob(images) if d.is_dir()} | ({root} if root.name == images else set())
    )
    if not image_dirs:
        raise InputError(f"{root}: no '{images}' folder found (expected {root}/**/{images}/ beside {masks}/)")
    pairs: list[tuple[Path, Path | None]] = []
    problems: list[str] = []
    for image_dir in image_dirs:
        images_here = image_files(image_dir, recursive=True)
        mask_dir = image_dir.parent / masks
        if not mask_dir.is_dir():
            if require_masks and images_here:
                problems.append(f"{image_dir}: no '{masks}' folder beside it")
            pairs.extend((p, None) for p in images_here)
            continue
        by_stem: dict[Path, list[Path]] = defaultdict(list)
        for p in image_files(mask_dir, recursive=True):
            by_stem[p.relative_to(mask_dir).with_suffix("")].append(p)
        used: set[Path] = set()
        missing = []
        for image in images_here:
            rel = image.relative_to(image_dir).with_suffix("")
            key = rel.with_name(rel.name + mask_suffix)
            candidates = by_stem.get(key)
            if not candidates:
                missing.append(image.name)
                if not require_masks:
                    pairs.append((image, None))
                continue
            used.add(key)
            pairs.append((image, min(candidates, key=lambda p: _MASK_SUFFIX_ORDER.get(p.suffix.lower(), 5))))
        if missing and require_masks:
            problems.append(
                f"{image_dir}: {len(missing)} image(s) without a mask in {mask_dir}: {', '.join(missing[:5])}"
            )
        orphans = sorted(str(k) for k in set(by_stem) - used)
        if orphans and require_masks:
            problems.append(f"{mask_dir}: {len(orphans)} mask(s) without an image: {', '.join(orphans[:5])}")
    if problems:
        raise InputError("; ".join(problems))
    if not pairs:
        raise InputError(
            f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, image_dirs))}"
        )
    return pairs


class FolderDataset(SegmentationDataset):
    """Images and masks from folders (see the module docstring).

    Args:
        root: folder to search; ``subdirs`` restricts the search to some of its sub-folders.
        images, masks: names of the image and mask folders.
        class_table: YAML path, dict or :class:`ClassTable` (needed for colour masks).
        spec: dataset spec; without a class table, masks are decoded by its label encoding (class
            indices, or the values or colours of the class table it was made from).
            With a class table, the spec's normalisation is used (e.g. a training set's, for validation).
        transform: joint transform of (image, mask), see :mod:`bicorseg.data.transforms`.
        mask_suffix: appended to an image's stem to name its mask (e.g. ``"_mask"``).
        require_masks: False for unlabelled images (masks are then all ignore).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        images: str = "images",
        masks: str = "masks",
        class_table: str | os.PathLike | Mapping[str, Any] | ClassTable | None = None,
        spec: DatasetSpec | None = None,
        transform: TrainTransform | None = None,
        subdirs: Sequence[str] | None = None,
        mask_suffix: str = "",
        require_masks: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        roots = [self.root / s for s in subdirs] if subdirs else [self.root]
        self.pairs = [
            pair
            for r in roots
            for pair in find_pairs(r, images, masks, mask_suffix=mask_suffix, require_masks=require_masks)
        ]
        table = ClassTable.load(class_table)
        if table is None:
            if spec is None:
                raise ConfigError(
                    f"{self.root}: a folder dataset needs a class table (class_table=...yaml) or a dataset spec"
                )
            self.labels = LabelTable.for_spec(spec)  # masks decoded as the spec's own were (a checkpoint's)
        else:
            if spec is None:
                spec = self._spec_from_table(table)
            elif (spec.num_classes, spec.ignore_index) != (len(table.class_names), table.ignore_index):
                raise ConfigError(
                    f"{table.source}: {len(table.class_names)} classes (ignore {table.ignore_index}) but the "
                    f"spec {spec.name!r} has {spec.num_classes} (ignore {spec.ignore_index})"
                )
            self.labels = table.labels
        super().__init__(spec, transform)

    def _spec_from_table(self, table: ClassTable) -> DatasetSpec:
        if table.bands is not None:
            return table.spec(table.bands, table.mean or (), table.std or ())
        first = read_image(self.pairs[0][0])
        samples = _sampled_pixels([p for p, _ in self.pairs])
        return table.spec(*default_normalisation(first.shape[0], first.dtype, samples, str(self.root)))

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_name(self, index: int) -> str:
        return self.pairs[index][0].relative_to(self.root).with_suffix("").as_posix()

    def sample_path(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load_mask(self, index: int) -> np.ndarray | None:
        """The ``H x W`` uint8 class-index mask of a sample (ignored pixels = ignore index)."""
        path = self.pairs[index][1]
        if path is None:
            return None
        raw = read_mask(path, mode="colour" if self.labels.kind == "colour" else "index")
        return self.labels.encode(raw, path)[0]

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return read_image(self.pairs[index][0]), self.load_mask(index)

    @classmethod
    def for_split(
        cls,
        root: str | os.PathLike,
        split: str | None,
        splits: Mapping[str, Sequence[str]] | None = None,
        **options: Any,
    ) -> FolderDataset:
        """The split's folder: ``root/{split}`` if it exists, else ``splits[split]`` (sub-folders of
        ``root``); ``split`` ``None``, ``""`` or ``"all"`` means the whole of ``root``."""
        root = Path(root).expanduser()
        if split in (None, "", "all"):
            return cls(root, **options)
        if splits is not None:
            if split not in splits:
                raise ConfigError(
                    f"folder dataset {root}: no split {split!r} in splits ({', '.join(splits)})"
                )
            return cls(root, subdirs=list(splits[split]), **options)
        if (root / split).is_dir():
            return cls(root / split, **options)
        raise ConfigError(
            f"folder dataset {root}: no '{split}' sub-folder; give `split` all (the whole folder), "
            f"or name the split's sub-folders in `splits`"
        )


def _sampled_pixels(
    paths: Sequence[Path], max_images: int = 32, max_pixels: int = 1 << 18
) -> Iterator[np.ndarray]:
    """The pixels (``bands x n``) of up to ``max_images`` images spread over ``paths``, each subsampled."""
    bands = None
    for path in list(paths)[:: max(1, len(paths) // max_images)][:max_images]:
        image = read_image(path)
        if bands is not None and image.shape[0] != bands:
            raise InputError(f"{path}: has {image.shape[0]} bands, other images have {bands}")
        bands = image.shape[0]
        flat = image.reshape(bands, -1)
        yield flat[:, :: max(1, flat.shape[1] // max_pixels)]
